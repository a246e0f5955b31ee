"""A fence marker is only ever the server's: a task whose publish finds its attempt fenced
while the server still runs that attempt has its job queued again (no retry spent), and
the job goes on to succeed; a fence for an attempt the server gave up on is ignored."""
from __future__ import annotations

import json

import pytest
from loop_world import make_world
from sqlmodel import select

from scheduler.runtime import jobfiles
from scheduler.runtime.executor import Completion
from scheduler.store import JobEvent, JobState, session_scope


def _forge_fence_then_publish(root: str, job_id: int, attempt: int) -> str:
    """Something other than the server fences the attempt; the task's publish then fails
    as it does in Ray. Returns the task's error as the executor words it."""
    path = jobfiles.result_path(root, job_id, attempt)
    jobfiles.ensure_dir(path.parent)
    path.write_text(json.dumps({"fenced": True}))
    with pytest.raises(jobfiles.Fenced) as err:
        jobfiles.publish_result(root, job_id, attempt, {"task_started_at": 1.0, "task_finished_at": 2.0})
    return f"{type(err.value).__name__}: {err.value}"


def _events(w, job_id: int) -> list[tuple[str, str | None]]:
    with session_scope(w.engine, readonly=True) as s:
        return [(e.kind, e.message) for e in s.exec(select(JobEvent).where(JobEvent.job_id == job_id)
                                                     .order_by(JobEvent.id)).all()]


def test_an_unexpected_fence_requeues_the_job_and_it_then_succeeds(tmp_path):
    w = make_world(tmp_path, retry_limit=1)  # one spent retry would fail it: none is spent
    job_id = w.submit()
    w.loop.run_once()
    assert (w.job(job_id).state, w.job(job_id).attempts) == (JobState.RUNNING, 1)
    w.executor.begin(job_id, w.now[0].timestamp())
    w.tick(3)
    error = _forge_fence_then_publish(w.executor.results_dir, job_id, 1)
    w.executor.finish(job_id, ok=False, error=error)
    report = w.loop.run_once()
    assert report.requeued == 1 and report.finished == 0
    job = w.job(job_id)
    assert (job.state, job.attempts, job.failures, job.error) == (JobState.RUNNING, 2, 0, None)  # started again
    requeued = [m for k, m in _events(w, job_id) if k == "requeued"]
    assert requeued == ["attempt 1's result was fenced, not by the server: queued again (no retry spent)"]
    w.executor.finish(job_id)
    w.loop.run_once()
    job = w.job(job_id)
    assert (job.state, job.attempts, job.failures) == (JobState.SUCCEEDED, 2, 0)
    assert "failed" not in [k for k, _ in _events(w, job_id)]


def test_a_fence_for_an_attempt_the_server_gave_up_on_is_ignored(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit()
    w.loop.run_once()
    w.restart()
    assert w.loop.recover()["requeued"] == 1  # the server fenced attempt 1 and queued the job again
    assert jobfiles.fenced(w.executor.results_dir, job_id, 1)
    w.loop.run_once()
    assert (w.job(job_id).state, w.job(job_id).attempts) == (JobState.RUNNING, 2)
    with pytest.raises(jobfiles.Fenced):  # attempt 1's orphaned task publishes late
        jobfiles.publish_result(w.executor.results_dir, job_id, 1, {"task_finished_at": 2.0})
    w.executor.queued.append(Completion(job_id, 1, False, error="Fenced: given up"))
    report = w.loop.run_once()
    assert (report.requeued, report.finished) == (0, 0)
    assert (w.job(job_id).state, w.job(job_id).attempts, w.job(job_id).failures) == (JobState.RUNNING, 2, 0)
    w.executor.attempts[job_id] = 2  # the fake drops a job on any completion; Ray still runs attempt 2
    w.executor.finish(job_id)
    w.loop.run_once()
    assert w.job(job_id).state == JobState.SUCCEEDED


def test_a_failed_task_without_a_fence_still_fails(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit()
    w.loop.run_once()
    jobfiles.ensure_dir(jobfiles.result_path(w.executor.results_dir, job_id, 1).parent)
    jobfiles.result_path(w.executor.results_dir, job_id, 1).write_text("[1, 2]")  # not a fence, nor a result
    w.executor.finish(job_id, ok=False, error="ValueError: bad input")
    w.loop.run_once()
    job = w.job(job_id)
    assert (job.state, job.failures, job.error) == (JobState.FAILED, 1, "ValueError: bad input")
