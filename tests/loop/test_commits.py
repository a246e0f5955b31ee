"""The loop's memory follows its commits, with the real Publisher in the loop.

- Four jobs ending four ways in one cycle (time limit, preemption, the job's own code
  failing, a cancel) are all published, and no cycle fails.
- A failure after the commits (publishing raises, as it did for TIMEOUT) is counted on
  its own and rolls nothing back: nothing is charged twice.
- A failure before the commit leaves memory as the database is: what it charged is
  charged again once, what it copied is copied again.
Usage is compared with the job history (services.history). SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from loop_world import make_world
from sqlmodel import Session

from scheduler.runtime import jobfiles
from scheduler.metrics import exporter
from scheduler.services import history
from scheduler.services.jobs import cancel
from scheduler.store import JobState, UsageRecord, session_scope
from scheduler.runtime.tasks import TaskResult

FAILURES = "fairgpu_schedule_cycle_failures_total"
PUBLISH_FAILURES = "fairgpu_schedule_cycle_publish_failures_total"
FINISHED = "fairgpu_account_finished_jobs_total"


def usage_by_job(engine) -> dict[int, float]:
    with engine.begin() as c:
        return dict(c.execute(sa.text("SELECT job_id, sum(slice_seconds) FROM usage_record GROUP BY job_id")).all())


def charged_up_to(engine, job_id: int) -> float:
    """Up to when the job's usage records charge it (epoch s), as the database says."""
    at = UsageRecord.__table__.c.at
    with engine.begin() as c:
        return c.execute(sa.select(sa.func.max(at)).where(UsageRecord.__table__.c.job_id == job_id)).scalar().timestamp()


def held_s(engine, job_id: int, at) -> float:
    """Seconds the job's attempts held their slices, from its history (admitted to ended)."""
    with session_scope(engine, readonly=True) as s:
        record = next(r for r in history.read(s, now=at) if r.id == job_id)
    return sum((a.end - a.start).total_seconds() for a in record.attempts)


def test_four_endings_in_one_cycle_are_published_and_no_cycle_fails(db_engine, tmp_path):
    w = make_world(tmp_path, engine=db_engine, checkpoint_grace_s=0, accounts=(
        ("lab", 1.0, {"guaranteed": 1}), ("big", 1.0), ("small", 1.0, {"guaranteed": 3})))
    timed = w.submit(seconds=600, account="lab", time_limit_s=60)
    failing, cancelled, victim = (w.submit(seconds=600, account="big") for _ in range(3))
    w.loop.run_once()
    assert len(w.executor.starts) == 4  # the node's 4 slices
    for job_id in (timed, failing, cancelled, victim):
        w.executor.begin(job_id, w.now[0].timestamp())
    w.tick(61)
    w.executor.finish(failing, ok=False, error="SystemExit: 1")  # the job's own code failed
    with session_scope(w.engine) as s:
        cancel(s, cancelled, None, w.now[0])
    w.submit(seconds=600, slices=3, account="small")  # below its guarantee: reclaims big's last slice
    report = w.loop.run_once()
    states = {j: w.job(j).state for j in (timed, failing, cancelled, victim)}
    assert states == {timed: JobState.TIMEOUT, failing: JobState.FAILED, cancelled: JobState.CANCELLED,
                      victim: JobState.PENDING}
    assert report.preempted == 1 and report.admitted == 1
    health = w.loop.health()
    assert (health.failures_total, health.publish_failures_total) == (0, 0)
    assert w.sample(FAILURES) == 0 and w.sample(PUBLISH_FAILURES) == 0
    assert w.sample(FINISHED, account="lab", status="timeout") == 1
    assert w.sample(FINISHED, account="big", status="failed") == 1
    assert w.sample(FINISHED, account="big", status="cancelled") == 1
    assert w.sample("fairgpu_account_preemptions_total", account="big", reason="reclaim_guarantee") == 1
    assert sum(w.sample(FINISHED, account=a, status=s) for a in ("lab", "big", "small")
               for s in exporter.FINISHED_STATUSES) == 3


def test_a_publishing_failure_is_counted_apart_and_bills_nothing_twice(db_engine, tmp_path, monkeypatch):
    w = make_world(tmp_path, engine=db_engine, usage_period_s=0.0)  # charge running jobs every cycle
    runner = w.submit(seconds=600, slices=2)
    timed = w.submit(seconds=600, time_limit_s=60)
    w.loop.run_once()
    t0 = w.now[0].timestamp()
    for job_id in (runner, timed):
        w.executor.begin(job_id, t0)  # Ray starts them at their admission
    w.tick(30)
    w.loop.run_once()
    # the exporter as it was: no `timeout` status, so publishing the time-out raises
    monkeypatch.setattr(exporter, "FINISHED_STATUSES", ("succeeded", "failed", "cancelled"))
    loader = w.loop.loader
    w.tick(40)
    w.loop.run_once()  # does not raise: the cycle's work is committed
    assert w.job(timed).state == JobState.TIMEOUT
    health = w.loop.health()
    assert (health.failures_total, health.consecutive_failures, health.publish_failures_total) == (0, 0, 1)
    assert health.last_publish_error.startswith("ValueError: not a final status")
    assert w.sample(PUBLISH_FAILURES) == 1 and w.sample(FAILURES) == 0
    # memory was not rolled back over what was committed
    assert w.loop.meter.charged_until[runner] == charged_up_to(w.engine, runner) == t0 + 70
    assert w.loop.loader is loader
    monkeypatch.undo()
    w.tick(20)
    w.executor.finish(runner, result=TaskResult(t0, t0 + 85, 0.0, 1))
    w.loop.run_once()
    assert w.job(runner).state == JobState.SUCCEEDED
    assert w.sample(FINISHED, account="lab", status="succeeded") == 1
    used, end = usage_by_job(w.engine), w.now[0]
    assert used[runner] == pytest.approx(2 * held_s(w.engine, runner, end)) == pytest.approx(2 * 85)
    assert used[timed] == pytest.approx(60)  # charged up to its limit, once
    assert w.loop.health().publish_failures_total == 1


def test_a_failure_before_the_commit_leaves_memory_as_the_database_is(db_engine, tmp_path):
    w = make_world(tmp_path, engine=db_engine, usage_period_s=0.0)
    w.loop.attempts.progress_period_s = 0.0  # look at progress files every cycle
    runner = w.submit(seconds=600, slices=2)
    timed = w.submit(seconds=600, time_limit_s=60)
    w.loop.run_once()
    t0 = w.now[0].timestamp()
    for job_id in (runner, timed):
        w.executor.begin(job_id, t0)
    w.tick(30)
    w.loop.run_once()
    jobfiles.write_progress(w.executor.results_dir, runner, {"step": 7})
    w.tick(40)

    def fail_the_time_out(session):  # the database refuses the commit that ends `timed`
        state = session.connection().execute(sa.text(f"SELECT state FROM job WHERE id = {timed}")).scalar()
        if state == JobState.TIMEOUT.value:
            raise RuntimeError("the database went away at commit")

    sa.event.listen(Session, "before_commit", fail_the_time_out)
    try:
        with pytest.raises(RuntimeError, match="went away at commit"):
            w.loop.run_once()  # charged, timed out and copied progress in memory, then failed
    finally:
        sa.event.remove(Session, "before_commit", fail_the_time_out)
    assert w.loop.health().failures_total == 1 and w.sample(FAILURES) == 1
    assert (w.job(timed).state, w.job(runner).progress) == (JobState.RUNNING, None)
    for job_id in (runner, timed):  # the meter is where the usage records are
        assert w.loop.meter.charged_until[job_id] == charged_up_to(w.engine, job_id) == t0 + 30
    w.loop.run_once()
    assert w.job(timed).state == JobState.TIMEOUT
    assert w.job(runner).progress == {"step": 7}  # copied again: the failed copy was not remembered
    assert w.loop.health().consecutive_failures == 0
    assert w.sample(FINISHED, account="lab", status="timeout") == 1
    used = usage_by_job(w.engine)
    assert used[timed] == pytest.approx(60)
    assert used[runner] == pytest.approx(2 * held_s(w.engine, runner, w.now[0])) == pytest.approx(2 * 70)


def test_a_cycle_times_its_phases_in_the_one_tuples_order(tmp_path):
    from scheduler.vocab import PHASES

    w = make_world(tmp_path)
    w.submit()
    assert tuple(w.loop.run_once().phases) == PHASES
    assert w.sample("fairgpu_schedule_cycle_duration_seconds_count") == 1  # published
