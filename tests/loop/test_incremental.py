"""The incremental loop (a change cursor feeding one quota.PolicyState) decides as a
from-scratch `quota.decide` on the same database state would: after submits, cancels,
finishes, a preemption, and a failed cycle whose memory must not survive. On SQLite and
PostgreSQL (where the change cursor is bounded by `event_horizon`)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from fake_executor import FakeExecutor
from loop_world import make_loop

import quota
from scheduler.services import snapshot
from scheduler.services.accounts import add_account, load_tree
from scheduler.services.capacity import load_capacity, set_node
from scheduler.services.jobs import cancel, submit_array
from scheduler.services.settings import policy_settings
from scheduler.services.snapshot import active_jobs
from scheduler.store import jobrow
from scheduler.store import (
    Account,
    JobEvent,
    JobState,
    init_db,
    make_engine,
    session_scope,
    transitions,
)
from scheduler.store.bulk import execute_many

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOLD = {"model": "hold", "framework": None, "mode": "train", "spec": {"seconds": 10}}


@dataclass
class FlakyExecutor(FakeExecutor):
    """Fails the cycle inside its write transaction, after the policy decided."""

    fail: bool = False

    def tracked(self) -> dict[int, int]:
        if self.fail:
            raise RuntimeError("Ray went away")
        return super().tracked()


def from_scratch(engine, at: datetime, usage) -> quota.Snapshot:
    """The snapshot built straight from the rows, with none of the loader's memory."""
    with session_scope(engine, readonly=True) as s:
        names = {a.id: a.name for a in s.exec(Account.__table__.select()).all()}
        settings = policy_settings(s)
        pending, running = [], []
        for j in active_jobs(s):
            if j.state == JobState.PENDING:
                pending.append(quota.PendingRequest(j.id, names[j.account_id], j.slices, seq=j.queue_seq,
                                                    submitted_at=j.submitted_at.timestamp()))
            else:
                running.append(quota.RunningJob(j.id, names[j.account_id], j.node,
                                                tuple(tuple(x) for x in j.gpu_slices), j.started_at.timestamp()))
        return quota.Snapshot(load_tree(s), load_capacity(s), tuple(pending), tuple(running), dict(usage),
                              at.timestamp(), settings.config)


def world(url, tmp_path):
    engine = make_engine(url)
    init_db(engine)
    with session_scope(engine) as s:
        set_node(s, node="n1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=T0)
        add_account(s, "a", weight=1.0, guaranteed=4)
        add_account(s, "b", weight=1.0)
    now = [T0]
    ex = FlakyExecutor(str(tmp_path / "results"))
    reports = []
    loop = make_loop(engine, ex, now, on_cycle=reports.append)
    return engine, ex, loop, now, reports


def submit(engine, now, account: str, slices: int, count: int = 1) -> list[int]:
    with session_scope(engine) as s:
        return submit_array(s, count=count, account=account, slices=slices, at=now[0], **HOLD)


def assert_agrees(report, expected: quota.Snapshot) -> None:
    want = quota.decide(replace(expected, usage=report.snapshot.usage))
    got = report.decision
    assert {(a.request_id, a.node, a.gpu_slices) for a in got.admissions} == \
        {(a.request_id, a.node, a.gpu_slices) for a in want.admissions}
    assert sorted(p.job_id for p in got.preemptions) == sorted(p.job_id for p in want.preemptions)
    assert dict(got.waiting) == dict(want.waiting)


def run_checked(engine, loop, now, reports):
    """Take the from-scratch snapshot of the database as it is, run one cycle with nothing
    to settle, and check that the loop's decision is decide()'s on that snapshot."""
    now[0] += timedelta(seconds=5)
    expected = from_scratch(engine, now[0], {})
    before = len(reports)
    loop.run_once()
    report = reports[before]
    assert_agrees(report, expected)
    return report


def test_incremental_loop_agrees_with_a_fresh_decide(db_url, tmp_path):
    engine, ex, loop, now, reports = world(db_url, tmp_path)
    big = submit(engine, now, "b", 4, 2)
    small = submit(engine, now, "b", 1, 4)
    first = run_checked(engine, loop, now, reports)
    assert sorted(ex.attempts) == big  # b fills the cluster
    # changes between cycles: a completion, cancels (one pending, one running), arrivals
    ex.finish(big[0])
    with session_scope(engine) as s:
        cancel(s, small[0], None, now[0])
    submit(engine, now, "a", 1, 1)
    loop.run_once()  # settles the completion (and refills)
    run_checked(engine, loop, now, reports)
    with session_scope(engine) as s:
        cancel(s, big[1], None, now[0])
    submit(engine, now, "b", 2, 3)
    run_checked(engine, loop, now, reports)
    # a is below its guarantee of 4 and the cluster is full of b: a's arrivals reclaim
    submit(engine, now, "a", 1, 3)
    r = run_checked(engine, loop, now, reports)
    assert first.admitted and r.preempted > 0  # victims requeued in the state and in the rows
    for _ in range(2):
        run_checked(engine, loop, now, reports)


def test_a_failed_cycle_leaves_no_memory_in_the_policy_state(db_url, tmp_path):
    engine, ex, loop, now, reports = world(db_url, tmp_path)
    jobs = submit(engine, now, "a", 1, 4) + submit(engine, now, "b", 2, 2)
    ex.fail = True  # the policy admits in memory, then the cycle fails before commit
    try:
        loop.run_once()
    except RuntimeError:
        pass
    else:
        raise AssertionError("the cycle should have failed")
    assert loop.health().consecutive_failures == 1
    with session_scope(engine, readonly=True) as s:
        assert {j.state for j in active_jobs(s, jobs)} == {JobState.PENDING}  # rolled back
    ex.fail = False
    r = run_checked(engine, loop, now, reports)
    assert r.admitted == 6  # all of them again: the failed cycle's admissions were forgotten
    with session_scope(engine, readonly=True) as s:
        assert {j.state for j in active_jobs(s, jobs)} == {JobState.RUNNING}


def test_bench_loop_quick_smoke():
    """`tests/perf/bench_loop.py --quick` runs the real loop and admits under churn."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "perf" / "bench_loop.py"
    spec = importlib.util.spec_from_file_location("bench_loop", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.main(["--quick"])
    assert r["first_admitted"] > 0 and r["admitted"] > 0  # each cycle refills what churn freed
    assert 0 < r["p50_ms"] <= r["p99_ms"]


def test_the_loop_stops_what_the_api_cancelled_between_cycles(db_url, tmp_path):
    """Reconcile looks only at the jobs re-read (and all after a rebuild): a running job
    cancelled through the API is still stopped in the executor."""
    engine, ex, loop, now, _reports = world(db_url, tmp_path)
    jobs = submit(engine, now, "b", 1, 3)
    loop.run_once()
    loop.run_once()  # nothing changed: nothing looked at, nothing stopped
    assert sorted(ex.attempts) == jobs
    with session_scope(engine) as s:
        cancel(s, jobs[1], None, now[0])
    loop.run_once()
    assert sorted(ex.attempts) == [jobs[0], jobs[2]]
    loop.loader = type(loop.loader)()  # a rebuild looks at every tracked job
    with session_scope(engine) as s:
        cancel(s, jobs[2], None, now[0])
    loop.run_once()
    assert sorted(ex.attempts) == [jobs[0]]


def test_sqlite_rows_read_through_the_driver_are_sqlalchemys(sqlite_url, tmp_path):
    engine, ex, loop, now, _reports = world(sqlite_url, tmp_path)
    jobs = submit(engine, now, "b", 4, 2) + submit(engine, now, "a", 1, 2)
    loop.run_once()
    ex.finish(jobs[0])
    now[0] += timedelta(seconds=3)
    loop.run_once()
    with session_scope(engine, readonly=True) as s:
        rows = s.connection().execute(jobrow.SELECT)  # SQLAlchemy's own result processing
        want = sorted(jobrow.JobRow(**r._mapping) for r in rows)  # by name
        assert any(w.finished_at for w in want) and any(w.started_at for w in want)
        assert sorted(active_jobs(s, jobs)) == [w for w in want if w.id in jobs]
        assert sorted(active_jobs(s)) == [w for w in want if w.state in (JobState.PENDING, JobState.RUNNING)]
        assert sorted(snapshot.running_jobs(s)) == [w for w in want if w.state == JobState.RUNNING]


def test_execute_many_stores_what_sqlalchemy_stores(sqlite_url, tmp_path):
    engine, _ex, _loop, now, _reports = world(sqlite_url, tmp_path)
    a, b = submit(engine, now, "a", 1, 2)
    stmt = transitions._update_statement(JobState.PENDING, JobState.RUNNING, False, ("gpu_slices", "node"))
    events = JobEvent.__table__
    columns = "state, version, admitted_at, started_at, node, gpu_slices, attempts, reason, reason_message"

    def params(job_id, version=0):
        return {"job_id": job_id, "job_version": version, "from_state": JobState.PENDING,
                "new_state": JobState.RUNNING, "new_reason": None, "new_message": "m", "at": now[0],
                "empty_slices": [], "f_gpu_slices": [[0, 1]], "f_node": "n1"}
    with session_scope(engine) as s:
        conn = s.connection()
        assert execute_many(conn, stmt, [params(a), params(b, version=7)]) == 1  # b is stale
        assert conn.execute(stmt, [params(b)]).rowcount == 1
        execute_many(conn, events.insert(), [{"job_id": a, "kind": "admitted", "message": "x", "at": now[0]}])
        conn.execute(events.insert(), [{"job_id": b, "kind": "admitted", "message": "x", "at": now[0]}])
        execute_many(conn, events.insert(), [{"job_id": a, "kind": "started", "at": now[0]}])  # SQLAlchemy's way
    with engine.connect() as c:
        got, want = (c.exec_driver_sql(f"SELECT {columns} FROM job WHERE id = ?", (j,)).one() for j in (a, b))
        assert got == want and got[0] == "RUNNING"
        kinds = c.exec_driver_sql("SELECT job_id, kind, message, at FROM job_event WHERE kind != 'submitted' "
                                  "ORDER BY id").all()
        assert kinds[0][0] == a and kinds[0][1:] == kinds[1][1:] and kinds[2][1:3] == ("started", None)


def test_the_loops_own_admissions_are_not_read_back(db_url, tmp_path):
    """The rows the loader keeps for jobs the loop admitted are the rows in the database
    (apply.admitted_row), their admission events are skipped, and a change made by
    someone else afterwards is still read."""
    engine, ex, loop, now, reports = world(db_url, tmp_path)
    jobs = submit(engine, now, "b", 2, 3) + submit(engine, now, "a", 1, 2)
    run_checked(engine, loop, now, reports)
    admitted = sorted(ex.attempts)
    assert admitted and set(admitted) <= set(jobs)
    with session_scope(engine) as s:
        assert loop.loader.rows == {j.id: j for j in active_jobs(s)}  # as written, to the byte
        synced = loop.loader.sync(s, horizon=snapshot.event_horizon(engine))
        assert not set(synced.changed) & set(admitted)  # their events were skipped
    with session_scope(engine) as s:
        cancel(s, admitted[0], None, now[0])  # someone else's change: read as usual
    r = run_checked(engine, loop, now, reports)
    assert admitted[0] not in ex.attempts and r.decision is not None
    with session_scope(engine) as s:
        assert loop.loader.rows == {j.id: j for j in active_jobs(s)}
    ex.finish(admitted[1])  # settled by the loop: dropped at once, its events skipped
    loop.run_once()
    assert admitted[1] not in loop.loader.rows and admitted[1] not in loop.loader.state.running
    with session_scope(engine) as s:
        assert loop.loader.rows == {j.id: j for j in active_jobs(s)}
        assert admitted[1] not in loop.loader.sync(s, horizon=snapshot.event_horizon(engine)).changed
    run_checked(engine, loop, now, reports)


def test_a_decisions_waiting_list_survives_the_states_later_changes():
    """PolicyState lends its queue lists to `decision.waiting` (no copy per cycle) and
    copies a list before changing it: an old decision still reads as decide() said."""
    capacity = quota.Capacity((quota.NodeCapacity("n1", 1, 4),))
    tree = quota.AccountTree.build([quota.AccountSpec("a", 1), quota.AccountSpec("b", 1)], 4)
    state = quota.PolicyState(tree, capacity, ties_by_id=True)
    for i in range(6):
        state.submit(quota.PendingRequest(i, "ab"[i % 2], 1 + i % 2, seq=float(i), submitted_at=0.0))
    snap = state.snapshot(10.0, {})
    decision = state.cycle(10.0, {})
    want = dict(quota.decide(snap).waiting)
    assert decision.admissions and len(want) > 1
    for i in range(6, 12):  # later arrivals, finishes and a second cycle change the queues
        state.submit(quota.PendingRequest(i, "ab"[i % 2], 1, seq=float(i), submitted_at=1.0))
    for adm in decision.admissions:
        state.finish(adm.request_id)
    assert state.cycle(20.0, {}).admissions
    assert dict(decision.waiting) == want
