"""`fairgpu forecast` through click's runner: the data set, a CSV, the jobs database, errors."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner

from scheduler.cli import main as cli


def test_default_dataset_json_and_plot(tmp_path):
    png = tmp_path / "f.png"
    r = CliRunner().invoke(cli, ["forecast", "--horizon", "3", "--json", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["x"] == "year" and data["n"] >= 10 and data["degree"] in (1, 2, 3)
    assert [p["x"] for p in data["forecast"]] == [2026.0, 2027.0, 2028.0]
    end = data["at_horizon"]
    assert end["lower"] < end["predicted"] < end["upper"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_csv_with_dates(tmp_path):
    p = tmp_path / "demand.csv"
    day0 = datetime(2026, 1, 1)
    p.write_text("day,slices\n" + "".join(f"{(day0 + timedelta(days=i)).date()},{10 + 2 * i}\n" for i in range(12)))
    r = CliRunner().invoke(cli, ["forecast", "--csv", str(p), "--x", "day", "--y", "slices", "--horizon", "10",
                                 "--degree", "1", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["x"] == "days since 2026-01-01"
    assert data["at_horizon"]["x"] == 21.0 and abs(data["at_horizon"]["predicted"] - 52.0) < 1e-6


def test_bad_input_exits_1_with_one_line(tmp_path):
    p = tmp_path / "few.csv"
    p.write_text("x,y\n1,2\n2,3\n3,5\n")
    cases = [
        (["forecast", "--csv", str(p), "--degree", "2"], "too few points for degree 2"),
        (["forecast", "--horizon", "0"], "horizon must be > 0"),
        (["forecast", "--horizon", "-3"], "horizon must be > 0"),
        (["forecast", "--csv", str(tmp_path / "missing.csv")], "cannot read"),
        (["forecast", "--csv", str(p), "--y", "memory"], "no column 'memory'"),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"x,y\n1,\xff\xfe\n")
    cases.append((["forecast", "--csv", str(bad)], "cannot read"))
    for args, message in cases:
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1, (args, r.output)
        assert message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_fits_recorded_jobs_from_the_database(tmp_path):
    from scheduler.services.accounts import add_account
    from scheduler.store import Job, JobState, init_db, make_engine, session_scope

    url = f"sqlite:///{tmp_path / 'f.db'}"
    engine = make_engine(url)
    init_db(engine)
    with session_scope(engine) as s:
        acct = add_account(s, "uni", weight=1)
        s.flush()
        t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
        for day in range(10):
            for j in range(day + 1):  # demand grows by one 2-slice, 1-hour job a day
                start = t0 + timedelta(days=day, hours=j)
                s.add(Job(account_id=acct.id, model="conv6", slices=2, state=JobState.SUCCEEDED, submitted_at=start,
                          started_at=start, finished_at=start + timedelta(hours=1),
                          result={"peak_memory_bytes": (1 + day) * 2 ** 30}))
    r = CliRunner().invoke(cli, ["forecast", "--from-db", url, "--metric", "slices", "--degree", "1", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["n"] == 10 and data["y"] == "slices_busy"
    # day d keeps (d + 1) x 2 slices x 1 h busy: (d + 1) / 12 slices on average; linear, so exact
    assert abs(data["at_horizon"]["predicted"] - (9.5 + 30 + 0.5) / 12) < 1e-6
    r = CliRunner().invoke(cli, ["forecast", "--from-db", url, "--metric", "memory", "--degree", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["y"] == "peak_memory_gib"
    r = CliRunner().invoke(cli, ["forecast", "--from-db", url, "--metric", "slices", "--degree", "9"])
    assert r.exit_code == 1  # --from-db's points are days: the message says so
    assert r.stderr.strip() == "Error: too few days with jobs for degree 9: 10 days with jobs, need at least 11"
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    init_db(make_engine(empty))
    r = CliRunner().invoke(cli, ["forecast", "--from-db", empty])
    assert r.exit_code == 1 and "no recorded jobs" in r.stderr


def test_a_plot_that_cannot_be_written_is_refused_before_the_fit(tmp_path):
    for target, message in ((tmp_path / "nowhere" / "f.png", "does not exist"),
                            (tmp_path / "f.docx", "unknown extension '.docx'")):
        r = CliRunner().invoke(cli, ["forecast", "--plot", str(target)])
        assert r.exit_code == 1 and message in r.stderr and r.stdout == "", r.output
        assert len(r.stderr.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
