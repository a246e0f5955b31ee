"""What-if on the live tree: the server's job history as a trace (scheduler.sim.history),
replayed by `fairgpu simulate --from-db` under the live tree and under --set changes.

The histories are written by the functions the server itself uses (services.jobs.submit_array
and cancel, apply.admit_many, apply.requeue, apply.finish), at fixed times."""
from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.loop import apply
from scheduler.cli import main as cli
from scheduler.services import accounts, capacity, jobs
from scheduler.sim.history import read_history
from scheduler.store import (
    Job,
    JobEvent,
    JobState,
    init_db,
    make_engine,
    session_scope,
    transition,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def run_job(engine, account: str, slices: int, submit: float, attempts=(), end: str = "finished") -> int:
    """A job as the server records it: submitted at `submit`, admitted at each attempt's
    start, preempted at each attempt's end but the last, which ends as `end`
    (finished, failed, timeout, cancelled, or running: left running)."""
    with session_scope(engine) as s:
        (jid,) = jobs.submit_array(s, count=1, account=account, model="hold", framework=None, mode="train",
                                   slices=slices, spec={"seconds": 1}, at=at(submit))
    for k, (start, stop) in enumerate(attempts):
        with session_scope(engine) as s:
            apply.admit_many(s, [(s.get(Job, jid), "gpu-1", [(0, slices)])], at=at(start))
        last = k + 1 == len(attempts)
        with session_scope(engine) as s:
            job = s.get(Job, jid)
            if not last:
                apply.requeue(s, job, at=at(stop), event="preempted", message="preempted for a guarantee")
            elif end in ("finished", "failed"):
                apply.finish(s, job, ok=end == "finished", at=at(stop), result=None,
                             error=None if end == "finished" else "boom")
            elif end == "timeout":  # as the loop's end_attempt ends it past its time limit
                transition(s, job, JobState.TIMEOUT, at=at(stop), event="timeout", message="ran past its limit",
                           refresh=False)
    if end == "cancelled":
        with session_scope(engine) as s:
            jobs.cancel(s, jid, None, at(attempts[-1][1] if attempts else submit + 5))
    return jid


def cluster(engine, gpus: int = 1, **weights) -> None:
    with session_scope(engine) as s:
        capacity.set_node(s, node="gpu-1", gpus=gpus, slices_per_gpu=4, gpu_type="T4", at=T0)
        for name, w in weights.items():
            accounts.add_account(s, name.replace("_", "-"), weight=w)


def test_history_reproduces_arrivals_sizes_and_run_times(db_engine):
    cluster(db_engine, gpus=2, uni_north=1, uni_south=1)
    done = run_job(db_engine, "uni-north", 2, 10, [(10, 110)])
    resumed = run_job(db_engine, "uni-south", 4, 20, [(30, 60), (90, 130)])  # preempted once, then finished
    failed = run_job(db_engine, "uni-north", 1, 40, [(40, 45)], end="failed")
    cancelled = run_job(db_engine, "uni-south", 1, 50, [(55, 75)], end="cancelled")
    running = run_job(db_engine, "uni-north", 3, 60, [(70, 70)], end="running")
    timed_out = run_job(db_engine, "uni-south", 2, 65, [(66, 96)], end="timeout")
    run_job(db_engine, "uni-south", 1, 70, end="cancelled")  # cancelled while waiting
    run_job(db_engine, "uni-north", 1, 80)  # still waiting
    with session_scope(db_engine) as s:
        h = read_history(s, now=at(200))
    got = {j.id: (j.account, j.submit_s, j.duration_s, j.slices) for j in h.trace.jobs}
    assert got == {
        str(done): ("uni-north", 0.0, 100.0, 2),
        str(resumed): ("uni-south", 10.0, 70.0, 4),
        str(failed): ("uni-north", 30.0, 5.0, 1),
        str(cancelled): ("uni-south", 40.0, 20.0, 1),
        str(running): ("uni-north", 50.0, 130.0, 3),  # time so far, up to now
        str(timed_out): ("uni-south", 55.0, 30.0, 2),
    }
    assert h.read == 8 and h.start == at(10)
    assert h.skipped == {"cancelled before it started": 1, "still waiting: never started": 1}
    real = {j.id: j for j in h.jobs}
    assert real[str(resumed)].intervals == [(20.0, 50.0), (80.0, 120.0)] and real[str(resumed)].preemptions == 1


def first_come_first_served(engine, gpus: int, n: int, north_slices: int = 1, duration: float = 100.0) -> None:
    """uni-north and uni-south (weight 1 each) submit n jobs each at time 0, north's with
    `north_slices` slices, south's with 1; really they ran first come, first served, all
    of north's first, as many at a time as the slices allow."""
    cluster(engine, gpus=gpus, uni_north=1, uni_south=1)
    free, wave = gpus * 4, 0.0
    for acct, slices in [("uni-north", north_slices)] * n + [("uni-south", 1)] * n:
        if slices > free:
            free, wave = gpus * 4, wave + duration
        free -= slices
        run_job(engine, acct, slices, 0, [(wave, wave + duration)])


def _whatif_db(tmp_path, n: int = 12, url: str | None = None):
    """One GPU (4 slices), n one-slice jobs of 100 s each, first come, first served."""
    url = url or f"sqlite:///{tmp_path / 'live.db'}"
    engine = make_engine(url)
    init_db(engine)
    first_come_first_served(engine, 1, n)
    return url, engine


def _state(engine):
    with session_scope(engine) as s:
        return (accounts.list_accounts(s), capacity.list_nodes(s),
                s.connection().execute(Job.__table__.select().order_by(Job.id)).all(),
                s.connection().execute(JobEvent.__table__.select().order_by(JobEvent.id)).all())


def test_set_changes_the_outcome_and_writes_nothing(tmp_path, db_url):
    url, engine = _whatif_db(tmp_path, url=db_url)
    before = _state(engine)
    r = CliRunner().invoke(cli, ["simulate", "--from-db", url, "--set", "uni-north.weight=3", "--json"])
    assert r.exit_code == 0, r.output
    assert "history: 24 jobs on record, 24 to replay" in r.stderr
    data = json.loads(r.stdout)
    assert list(data) == ["actual", "live", "live+set"]
    actual, live, changed = data["actual"], data["live"], data["live+set"]
    # really: north's 12 jobs ran first (waits 0-200 s), south's after (300-500 s)
    assert actual["institutions"]["uni-north"]["wait_p95_s"] == pytest.approx(200.0)
    assert actual["institutions"]["uni-south"]["wait_p50_s"] == pytest.approx(400.0)
    assert actual["institutions"]["uni-north"]["slice_hours"] == pytest.approx(12 * 100 / 3600)
    assert actual["jobs"] == live["jobs"] == changed["jobs"] == 24
    # replayed at equal weights, they share 2:2; at 3:1 north waits less and south more
    north = [d["institutions"]["uni-north"]["wait_p50_s"] for d in (live, changed)]
    south = [d["institutions"]["uni-south"]["wait_p50_s"] for d in (live, changed)]
    assert north[1] < north[0] and south[1] > south[0], (north, south)
    assert live["utilisation"] == pytest.approx(1.0) and actual["utilisation"] == pytest.approx(1.0)
    assert _state(engine) == before  # the change was never written


def test_table_shows_actual_beside_the_replay(tmp_path):
    url, _ = _whatif_db(tmp_path, n=4)
    r = CliRunner().invoke(cli, ["simulate", "--from-db", url, "--set", "uni-south.max=1"])
    assert r.exit_code == 0, r.output
    assert "what if: uni-south.max=1" in r.stderr
    for word in ("actual", "live+set", "uni-north", "uni-south", "slice_h"):
        assert word in r.stdout


@pytest.mark.parametrize("change, code, message", [
    ("nope.weight=2", 1, "unknown account nope"),
    ("uni-north.weight=0", 1, "weight must be 0.001 to 1,000 (got 0)"),
    ("uni-north.weight=heavy", 1, "weight must be 0.001 to 1,000 (got 'heavy')"),
    ("uni-north.guaranteed=1.5", 1, "guaranteed must be an integer"),
    ("uni-north.guaranteed=9", 1, "with --set uni-north.guaranteed=9: top-level guarantees sum to 9 slices"),
    ("uni-north.colour=2", 2, "unknown field 'colour'"),
    ("uni-north", 2, "expected ACCOUNT.FIELD=VALUE"),
])
def test_a_bad_set_is_one_line_and_writes_nothing(tmp_path, change, code, message):
    url, engine = _whatif_db(tmp_path, n=1)
    before = _state(engine)
    r = CliRunner().invoke(cli, ["simulate", "--from-db", url, "--set", change])
    assert r.exit_code == code, r.output
    assert message in r.stderr
    if code == 1:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _state(engine) == before


def test_set_needs_from_db():
    r = CliRunner().invoke(cli, ["simulate", "--set", "a.weight=2"])
    assert r.exit_code == 2 and "needs --from-db" in r.stderr


def test_no_job_to_replay_exits_1(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    init_db(engine)
    cluster(engine, uni_north=1)
    run_job(engine, "uni-north", 1, 0)  # still waiting
    run_job(engine, "uni-north", 1, 0, end="cancelled")  # cancelled while waiting
    r = CliRunner().invoke(cli, ["simulate", "--from-db", url])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: no job history to replay: all 2 were left out "
        "(1 cancelled before it started, 1 still waiting: never started)")


def test_a_run_that_drops_every_job_exits_1(tmp_path):
    url = f"sqlite:///{tmp_path / 'shrunk.db'}"
    engine = make_engine(url)
    init_db(engine)
    cluster(engine, gpus=2, uni_north=1)
    run_job(engine, "uni-north", 8, 0, [(0, 50)])  # two whole GPUs
    with session_scope(engine) as s:  # the node has since lost a GPU
        capacity.set_node(s, node="gpu-1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=at(100))
    r = CliRunner().invoke(cli, ["simulate", "--from-db", url])
    assert r.exit_code == 1
    assert "left out 1 jobs: larger than any node" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: all 1 jobs of trace history were left out (1 larger than any node): nothing to compare")


def test_a_foreign_trace_on_the_live_tree_that_drops_every_job_exits_1(tmp_path):
    url, _ = _whatif_db(tmp_path, n=1)
    trace = tmp_path / "t.csv"
    trace.write_text("id,account,submit_s,duration_s,slices\na,inst000,0,10,1\nb,inst001,0,10,1\n")
    r = CliRunner().invoke(cli, ["simulate", "--trace", str(trace), "--from-db", url, "--policy", "fifo"])
    assert r.exit_code == 1
    assert "all 2 jobs of trace t were left out (2 account not in the tree)" in r.stderr


def test_the_docs_example_runs(tmp_path):
    """docs/simulation.md, "What-if on the live tree": its command, on a history like its own."""
    doc = (Path(__file__).parents[2] / "docs" / "simulation.md").read_text()
    section = doc.split("## What-if on the live tree", 1)[1]
    line = next(ln for ln in section.splitlines() if ln.startswith("fairgpu simulate --from-db"))
    args = shlex.split(line)[1:]
    url = f"sqlite:///{tmp_path / 'fairgpu.db'}"
    args[args.index("--from-db") + 1] = url
    engine = make_engine(url)
    init_db(engine)
    first_come_first_served(engine, 4, 16, north_slices=2, duration=3600.0)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    for row in ("actual", "live", "live+set"):
        assert f"\n{row} " in r.stdout


def test_a_short_historys_times_read_as_durations_not_hundredths_of_hours(tmp_path):
    """100-second jobs: waits of 0 to 100 s read 1m40s, not 0.03 (hours rounded to 2
    decimals read 0.01 for a whole minute); --json keeps the seconds exact."""
    url, _ = _whatif_db(tmp_path, n=4)
    r = CliRunner().invoke(cli, ["simulate", "--from-db", url])
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if line.lstrip().startswith("policy"))
    assert header.split()[3:5] == ["mean_jct", "makespan"] and "wait_p95" in header.split()
    actual = next(line for line in r.stdout.splitlines() if line.lstrip().startswith("actual")).split()
    assert actual[4] == "3m20s"  # makespan: two waves of 100 s
    inst = next(line for line in r.stdout.splitlines() if line.lstrip().startswith("uni-south")).split()
    assert inst[3] == "1m40s/1m40s"  # really, south waited one wave of 100 s
    data = json.loads(CliRunner().invoke(cli, ["simulate", "--from-db", url, "--json"]).stdout)
    assert data["actual"]["makespan_s"] == pytest.approx(200.0)


def test_a_missing_sqlite_file_is_refused_and_nothing_is_created(tmp_path):
    missing = tmp_path / "typo.db"
    for args in (["simulate", "--from-db", f"sqlite:///{missing}"],
                 ["forecast", "--from-db", f"sqlite:///{missing}"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1, r.output
        assert r.stderr.strip() == (f"Error: cannot open database sqlite:///{missing}: no such file {missing} "
                                    "(nothing was created)")
        assert not missing.exists() and list(tmp_path.iterdir()) == []
