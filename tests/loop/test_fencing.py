"""Every write of the loop is fenced by the leader lease (scheduler.store.lease): a loop
whose lease lapsed writes nothing until it renews, and one whose lease another server
took over writes nothing and stops. SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fake_executor import FakeExecutor
from loop_world import T0

from scheduler.loop.coordinator import SchedulingLoop
from scheduler.services.accounts import add_account
from scheduler.services.capacity import set_node
from scheduler.services.jobs import submit_array
from scheduler.store import JobState, session_scope
from scheduler.store.lease import Lease, LeaseHeld, LeaseLapsed, LeaseLost


def _counts(engine) -> tuple:
    with engine.begin() as c:
        return tuple(c.execute(sa.text(q)).scalar() for q in (
            "SELECT count(*) FROM job_event", "SELECT count(*) FROM usage_record",
            "SELECT coalesce(sum(version), 0) FROM job", "SELECT count(*) FROM node"))


def test_a_loop_that_lost_its_lease_writes_nothing(db_engine, tmp_path):
    wall = [datetime(2026, 11, 28, 8, 0, tzinfo=UTC)]
    mine = Lease(db_engine, ttl_s=10, host="a", pid=1, now=lambda: wall[0])
    theirs = Lease(db_engine, ttl_s=10, host="b", pid=2, now=lambda: wall[0])
    mine.try_acquire()
    with pytest.raises(LeaseHeld, match="already running: a pid 1 since 2026-11-28 08:00:00 UTC"):
        theirs.try_acquire()
    with session_scope(db_engine) as s:
        set_node(s, node="n1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=T0)
        add_account(s, "lab", weight=1)
    lost = []
    loop = SchedulingLoop(db_engine, FakeExecutor(str(tmp_path / "r")), lambda: T0, discover=False, lease=mine,
                          on_lease_lost=lost.append)
    loop.backoff_s = (0.0, 0.0)

    def add_job():
        with session_scope(db_engine) as s:
            return submit_array(s, count=1, account="lab", model="hold", framework=None, mode="train", slices=1,
                                spec={"seconds": 1}, at=T0)[0]

    first = add_job()
    loop.run_once()
    assert loop.executor.attempts == {first: 1}

    wall[0] += timedelta(seconds=11)  # paused past its lease: nobody took over yet
    second = add_job()
    before = _counts(db_engine)
    with pytest.raises(LeaseLapsed):
        loop.run_once()
    assert _counts(db_engine) == before and loop.health().consecutive_failures == 1
    mine.renew()  # the heartbeat comes back: the lease is still ours
    loop.run_once()
    with session_scope(db_engine, readonly=True) as s:
        from scheduler.store import Job
        assert s.get(Job, second).state == JobState.RUNNING

    wall[0] += timedelta(seconds=11)
    assert theirs.try_acquire() == 2  # a standby took over
    add_job()
    before = _counts(db_engine)
    with pytest.raises(LeaseLost):
        loop.run_once()
    with pytest.raises(LeaseLost):
        mine.renew()
    loop.run(period_s=0.01)  # returns at once, telling the server
    assert len(lost) == 1 and "now held by b pid 2" in str(lost[0])
    assert _counts(db_engine) == before
