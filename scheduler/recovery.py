"""Recovery and drain: ending every attempt a server will no longer follow.

- `recover` runs when a server takes the lease (start, restart, a standby taking over):
  every RUNNING job either finished (its result file is there: SUCCEEDED) or goes back
  to the head of its queue; then the start markers of the attempts it ended are removed.
- `drain` runs on a clean shutdown: it stops every running attempt in Ray and ends it the
  same way.

Invariants: both go through `apply.end_attempt`, the one owner of "result there? finish :
requeue"; neither spends a job's retries (a restart or a drain is not the job's fault);
both write only inside `scope()`, the caller's fenced write transaction.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable, ContextManager

from sqlmodel import Session, select

from scheduler import apply, jobfiles
from scheduler.store import Job, JobState

RESTARTED = "the scheduler restarted while it ran; queued again"
SHUT_DOWN = "the scheduler shut down; queued again"


def recover(scope: Callable[[], ContextManager[Session]], results_dir: str, meter: apply.UsageMeter, *,
            now: datetime, retry_limit: int) -> dict[str, int]:
    """Settle every RUNNING job a previous server left; returns counts by outcome. The time
    between the last usage record and the crash is not charged (nobody saw the task)."""
    counts = {"finished": 0, "requeued": 0}
    with scope() as s:
        for job in s.exec(select(Job).where(Job.state == JobState.RUNNING)).all():
            ended = apply.end_attempt(s, job, results_dir, meter, at=now, retry_limit=retry_limit,
                                      lost=apply.Lost("requeued", RESTARTED))
            if ended.outcome == apply.Outcome.FINISHED:
                counts["finished"] += 1
            elif ended.outcome == apply.Outcome.REQUEUED:
                counts["requeued"] += 1
    # after recovery no attempt is followed: every start marker belongs to an ended attempt
    counts["markers_removed"] = jobfiles.remove_markers(results_dir)
    return counts


def drain(scope: Callable[[], ContextManager[Session]], executor, meter: apply.UsageMeter, *, now: datetime,
          retry_limit: int, checkpoint: Callable[[list[int]], None] = lambda _ids: None) -> int:
    """On shutdown: let running tasks checkpoint (`checkpoint`), stop them and queue their
    jobs again (or record them as finished if their result is there). Returns how many
    were queued again."""
    started = {job_id: executor.task_started_at(job_id) for job_id in executor.tracked()}
    checkpoint([j for j, at in started.items() if at is not None])
    executor.shutdown()
    n = 0
    with scope() as s:
        for job_id, started_at in started.items():
            job = s.get(Job, job_id)
            if job is None or job.state != JobState.RUNNING:
                continue
            ended = apply.end_attempt(s, job, executor.results_dir, meter, at=now, retry_limit=retry_limit,
                                      lost=apply.Lost("requeued", SHUT_DOWN, charge_until=now, started_at=started_at))
            n += ended.outcome == apply.Outcome.REQUEUED
    for job_id in started:
        executor.forget(job_id)
    return n
