"""`apply.end_attempt`, the one owner of "result there? finish : requeue", as a table.

Each case: a RUNNING job with `failures` own failures so far, ended for a cause, with or
without its result file; the outcome, the job's state, its failures after, and the event."""
from __future__ import annotations

import pytest
from loop_world import make_world
from sqlmodel import select

from scheduler.loop import apply
from scheduler.store import JobEvent, JobState, session_scope
from scheduler.runtime.jobfiles import publish_result as _write_result, result_path

PREEMPTED = apply.Lost("preempted", "reclaimed for another account")
RESTART = apply.Lost("requeued", "the scheduler restarted")
DRAIN = apply.Lost("requeued", "the scheduler shut down")
WORKER_DIED = apply.Lost("requeued", "lost its worker", own_fault=True)

CASES = {
    # name: (lost, failures before, result file?, outcome, state, failures after, last event)
    "preempted victim whose result is there succeeded": (PREEMPTED, 0, True, apply.Outcome.FINISHED,
                                                          JobState.SUCCEEDED, 0, "finished"),
    "preempted victim without a result is queued again": (PREEMPTED, 0, False, apply.Outcome.REQUEUED,
                                                           JobState.PENDING, 0, "preempted"),
    "a restart spends no retry": (RESTART, 2, False, apply.Outcome.REQUEUED, JobState.PENDING, 2, "requeued"),
    "a drain spends no retry": (DRAIN, 2, False, apply.Outcome.REQUEUED, JobState.PENDING, 2, "requeued"),
    "a preemption spends no retry": (PREEMPTED, 2, False, apply.Outcome.REQUEUED, JobState.PENDING, 2,
                                     "preempted"),
    "a lost worker spends one": (WORKER_DIED, 0, False, apply.Outcome.REQUEUED, JobState.PENDING, 1, "requeued"),
    "the last retry spent fails it": (WORKER_DIED, 2, False, apply.Outcome.FAILED, JobState.FAILED, 3, "failed"),
    "a lost worker whose result is there succeeded": (WORKER_DIED, 2, True, apply.Outcome.FINISHED,
                                                      JobState.SUCCEEDED, 2, "finished"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_end_attempt(tmp_path, case):
    lost, failures, has_result, outcome, state, failures_after, event = CASES[case]
    w = make_world(tmp_path)
    job_id = w.submit()
    w.loop.run_once()
    with session_scope(w.engine) as s:
        s.connection().exec_driver_sql(f"UPDATE job SET failures = {failures} WHERE id = {job_id}")
    job = w.job(job_id)
    assert job.state == JobState.RUNNING
    if has_result:
        start = w.now[0].timestamp()
        _write_result(w.executor.results_dir, job_id, job.attempts,
                      {"task_started_at": start, "task_finished_at": start + 4.0})
    with session_scope(w.engine) as s:
        ended = apply.end_attempt(s, job, w.executor.results_dir, w.loop.meter, at=w.now[0], lost=lost,
                                  retry_limit=3)
    assert ended.outcome == outcome
    after = w.job(job_id)
    assert (after.state, after.failures) == (state, failures_after)
    with session_scope(w.engine, readonly=True) as s:
        kinds = [e.kind for e in s.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))]
    assert kinds[-1] == event
    if outcome == apply.Outcome.FAILED:
        assert after.error.startswith("gave up after 3 lost attempts")
    if has_result:
        assert ended.charged == pytest.approx(4.0)  # task start to task end, one slice
    else:  # fenced: a late result of this attempt can never be published
        assert '"fenced": true' in result_path(w.executor.results_dir, job_id, job.attempts).read_text()


def test_a_job_someone_else_settled_is_left_alone(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit()
    w.loop.run_once()
    stale = w.job(job_id)
    with session_scope(w.engine) as s:
        assert apply.end_attempt(s, stale, w.executor.results_dir, w.loop.meter, at=w.now[0], lost=PREEMPTED,
                                 retry_limit=3).outcome == apply.Outcome.REQUEUED
    with session_scope(w.engine) as s:  # the same, stale copy again
        assert apply.end_attempt(s, stale, w.executor.results_dir, w.loop.meter, at=w.now[0], lost=PREEMPTED,
                                 retry_limit=3).outcome == apply.Outcome.STALE
    assert w.job(job_id).state == JobState.PENDING
