"""Why jobs wait is stored per (account, size) group (the wait_reason table), not on every
waiting job: a job's own reason column holds only a reason of its own, and the API shows
the group's for the others. A reason that flips touches one row, whatever the queue's
length (the bench at churn 10 rewrote 15,000-46,000 job rows a cycle before).
On SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fake_executor import FakeExecutor
from loop_world import make_loop
from sqlmodel import select

import quota
from scheduler.services import jobs as jobs_service
from scheduler.services.accounts import add_account, set_account
from scheduler.services.capacity import set_node
from scheduler.services.jobs import submit_array
from scheduler.store import Account, Job, WaitReason, init_db, make_engine, session_scope

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOLD = {"model": "hold", "framework": None, "mode": "train", "spec": {"seconds": 10}}


def world(url, tmp_path):
    engine = make_engine(url)
    init_db(engine)
    with session_scope(engine) as s:
        set_node(s, node="n1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=T0)
        add_account(s, "b", weight=1.0)
    now = [T0]
    ex = FakeExecutor(str(tmp_path / "results"))
    reports: list = []
    return engine, ex, make_loop(engine, ex, now, on_cycle=reports.append), reports


def submit(engine, slices: int, count: int) -> list[int]:
    with session_scope(engine) as s:
        return submit_array(s, count=count, account="b", slices=slices, at=T0, **HOLD)


def stored(engine) -> dict[tuple[str, int], str]:
    with session_scope(engine, readonly=True) as s:
        names = {a.id: a.name for a in s.exec(select(Account)).all()}
        return {(names[w.account_id], w.slices): w.reason for w in s.exec(select(WaitReason)).all()}


def shown(engine, job_ids) -> dict[int, tuple]:
    """What the API shows (services.jobs.public), and the job's own reason column."""
    with session_scope(engine, readonly=True) as s:
        rows = [s.get(Job, j) for j in job_ids]
        waits = jobs_service.wait_reasons(s, rows)
        return {j.id: (jobs_service.public(s, j, waits=waits)["reason"], j.reason) for j in rows}


def test_a_groups_reason_is_stored_once_and_shown_for_each_waiting_job(db_url, tmp_path):
    engine, ex, loop, reports = world(db_url, tmp_path)
    running = submit(engine, 4, 2)  # fills both GPUs
    waiting = submit(engine, 1, 5)
    loop.run_once()
    assert sorted(ex.attempts) == running
    loop.run_once()  # the size-4 group, whose jobs all started in the first cycle, is dropped in the next
    decision = reports[-1].decision
    want = {j: decision.waiting[j].reason for j in waiting}
    assert set(want.values()) == {quota.RESOURCES}
    assert stored(engine) == {("b", 1): quota.RESOURCES}
    assert shown(engine, waiting) == {j: (quota.RESOURCES, None) for j in waiting}  # none on the job itself
    with session_scope(engine, readonly=True) as s:  # one job alone (jobs.public reads its group)
        one = jobs_service.public(s, s.get(Job, waiting[0]))
        assert (one["reason"], one["reason_message"]) == (quota.RESOURCES, decision.waiting[waiting[0]].message)
    # the cap makes b's group QuotaCap: one stored row changes, no job row
    with session_scope(engine) as s:
        set_account(s, "b", cap=8)
    loop.run_once()
    assert stored(engine) == {("b", 1): quota.QUOTA_CAP}
    assert shown(engine, waiting) == {j: (quota.QUOTA_CAP, None) for j in waiting}
    # when the group's jobs have all started, its row goes
    with session_scope(engine) as s:
        set_account(s, "b", cap=None)
    for job_id in running:
        ex.finish(job_id)
    loop.run_once()
    assert sorted(ex.attempts) == sorted(waiting)
    loop.run_once()
    assert stored(engine) == {}


def test_a_jobs_own_reason_comes_first_and_a_rebuild_clears_a_stale_one(db_url, tmp_path):
    engine, ex, loop, _reports = world(db_url, tmp_path)
    submit(engine, 4, 2)
    waiting = submit(engine, 2, 3)
    loop.run_once()
    loop.run_once()
    with session_scope(engine) as s:  # as a server that stopped while holding this job back left it
        s.connection().execute(sa.update(Job).where(Job.id == waiting[0])
                               .values(reason="RayRefused", reason_message="Ray refused to place it"))
        s.connection().execute(sa.delete(WaitReason))  # and a stale table
    assert shown(engine, waiting)[waiting[0]] == ("RayRefused", "RayRefused")
    assert shown(engine, waiting)[waiting[1]] == (None, None)  # no group row: nothing to show
    restarted = make_loop(engine, ex, [T0])  # a new loader: the state is rebuilt from the rows
    restarted.run_once()
    assert shown(engine, waiting) == {j: (quota.RESOURCES, None) for j in waiting}
    assert stored(engine) == {("b", 2): quota.RESOURCES}


def test_a_flipping_reason_writes_no_job_row(sqlite_url, tmp_path):
    """A trigger counts the job rows whose reason columns are written: a long queue whose
    group reason changes costs one wait_reason row, not a row per waiting job."""
    engine, ex, loop, _reports = world(sqlite_url, tmp_path)
    submit(engine, 4, 2)
    submit(engine, 1, 300)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE reason_writes (n INTEGER)")
        c.exec_driver_sql("INSERT INTO reason_writes VALUES (0)")
        c.exec_driver_sql("CREATE TRIGGER count_reason_writes AFTER UPDATE OF reason, reason_message ON job "
                          "BEGIN UPDATE reason_writes SET n = n + 1; END")
    loop.run_once()
    loop.run_once()
    for cap in (8, None, 8):
        with session_scope(engine) as s:
            set_account(s, "b", cap=cap)
        loop.run_once()
    with engine.connect() as c:
        writes = c.exec_driver_sql("SELECT n FROM reason_writes").scalar()
    assert stored(engine) == {("b", 1): quota.QUOTA_CAP}
    assert writes == 2  # the two jobs admitted (their reason is cleared as they start), no waiting one
