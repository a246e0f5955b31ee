"""`fairgpu report`: its formats on a real SQLite file, and client mode against a live server."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_history import EXPECTED, JAIN, UNTIL, build

from scheduler.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli_client"))

PERIOD = ["--since", "2026-11-02", "--until", "2026-11-02T04:00:00"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    from scheduler.store import init_db, make_engine

    path = tmp_path_factory.mktemp("report") / "fg.db"
    engine = make_engine(f"sqlite:///{path}")
    init_db(engine)
    build(engine)
    engine.dispose()
    return f"sqlite:///{path}"


@pytest.fixture
def cli(db, tmp_path):
    runner = CliRunner()
    env = {"FAIRGPU_DB": db, "FAIRGPU_URL": None, "FAIRGPU_TOKEN": None, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}

    def run(*args, expect=0, extra_env=None):
        result = runner.invoke(main, ["report", *args], env={**env, **(extra_env or {})})
        assert result.exit_code == expect, f"{args}: {result.exit_code}\n{result.output}{result.stderr}"
        return result

    return run


def test_json_is_the_list_of_rows_with_slice_hours(cli):
    rows = json.loads(cli(*PERIOD, "--json").stdout)
    assert [r["account"] for r in rows] == list(EXPECTED)
    assert {r["account"]: r["slice_hours"] for r in rows} == pytest.approx(
        {name: want[0] for name, want in EXPECTED.items()})


def test_csv_is_ready_for_chargeback(cli):
    out = list(csv.reader(io.StringIO(cli(*PERIOD, "--csv", "--account", "north").stdout)))
    assert out[0][:5] == ["since", "until", "account", "parent", "slice_hours"]
    assert [(r[0], r[2], float(r[4])) for r in out[1:]] == [
        ("2026-11-02T00:00:00+00:00", "north", 10.5), ("2026-11-02T00:00:00+00:00", "north/cv", 8.5),
        ("2026-11-02T00:00:00+00:00", "north/nlp", 1.0)]


def test_the_table_ends_with_the_cluster_figures(cli):
    out = cli(*PERIOD).stdout
    assert "north/nlp" in out and "used_h" in out and "starved_h" in out
    assert "capacity 4 slices (16 slice-hours), used 12.5 slice-hours, utilisation 78.1%, Jain's index 0.993" in out
    assert f"{JAIN:.3f}" == "0.993"


def test_plot_writes_the_file(cli, tmp_path):
    target = tmp_path / "owed.png"
    result = cli(*PERIOD, "--json", "--plot", str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {target}" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--since", "2026-11-31"], "Error: since must be a date (YYYY-MM-DD) or an ISO 8601 time (got '2026-11-31')"),
    (["--since", "2026-11-05", "--until", "2026-11-01"], "Error: the period must end after it starts"),
    (["--account", "nowhere"], "Error: unknown account nowhere"),
])
def test_bad_input_exits_1_with_one_line_and_writes_nothing(cli, tmp_path, args, message):
    target = tmp_path / "never.png"
    result = cli(*args, "--plot", str(target), expect=1)
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1 and result.stdout == ""
    assert not target.exists()


@pytest.mark.parametrize("name, message", [
    ("missing/owed.png", "the folder {tmp}/missing does not exist"),
    ("owed.xyz", "unknown extension '.xyz' (use one of "),
    ("owed", "unknown extension none (use one of "),
])
def test_a_plot_that_cannot_be_written_is_one_line_and_nothing_is_written(cli, tmp_path, name, message):
    before = sorted(tmp_path.rglob("*"))
    result = cli(*PERIOD, "--plot", str(tmp_path / name), expect=1)
    assert result.stderr.startswith(f"Error: --plot {tmp_path / name}: {message.format(tmp=tmp_path)}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output and result.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_tables_round_figures_and_json_keeps_them_exact(cli):
    """A tiny figure reads <0.01 (not 1.578e-05) in the table; --json has it exact."""
    period = ["--since", "2026-11-02T03:59:59.99", "--until", "2026-11-02T04:00:00"]
    table = cli(*period, "--account", "south").stdout
    assert "e-0" not in table and "<0.01" in table
    (row,) = json.loads(cli(*period, "--account", "south", "--json").stdout)
    assert 0 < row["held_slice_hours"] < 1e-4


def test_json_and_csv_together_are_a_usage_error(cli):
    assert "exclude each other" in cli("--json", "--csv", expect=2).stderr


def test_client_mode_shows_an_institution_its_own_subtree(tmp_path):
    from live_server import start

    def seed(engine):
        from scheduler.services import auth
        from scheduler.store import session_scope

        build(engine)
        with session_scope(engine) as s:
            return {"north": auth.issue_token(s, account="north", name="north", expires_s=None,
                                              at=UNTIL)}

    live = start(tmp_path / "live.db", seed=seed)
    try:
        env = {"FAIRGPU_URL": live.url, "FAIRGPU_TOKEN": live.tokens["north"], "FAIRGPU_DB": None,
               "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
        runner = CliRunner()
        result = runner.invoke(main, ["report", *PERIOD, "--json"], env=env)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["account"] for r in rows] == ["north", "north/cv", "north/nlp"]
        assert rows[0]["owed_slice_hours"] == pytest.approx(10.75)
        result = runner.invoke(main, ["report", *PERIOD, "--account", "south"], env=env)
        assert (result.exit_code, result.stderr) == (1, "Error: unknown account south\n")
        plot = tmp_path / "north.svg"
        result = runner.invoke(main, ["report", *PERIOD, "--plot", str(plot)], env=env)
        assert result.exit_code == 0 and plot.read_text().lstrip().startswith("<?xml")
    finally:
        live.stop()
