"""Recovery and drain: ending every attempt a server will no longer follow.

- `recover` runs when a server takes the lease (start, restart, a standby taking over):
  every RUNNING job either finished (its result file is there: SUCCEEDED) or goes back
  to its place in its queue (its original submission order: requeued jobs keep it
  among themselves too); then the start markers of the attempts it ended are removed.
- `drain` runs on a clean shutdown: it stops every running attempt in Ray and ends it the
  same way.

No crash loop: a job whose task was running at `UNCLEAN_STOP_LIMIT` (2) unclean stops of
the scheduler in a row is not started again: recovery ends it FAILED, saying so. How the
last server stopped (`last_stop`) is read from the lease row the new server replaced
(`Lease.previous`):
- CLEAN: it released the lease (after its drain, which already queued its jobs again);
- LAPSED: its lease lapsed but its process still runs on this host (it was paused, e.g.
  SIGSTOP; it writes nothing more once it resumes): its pid exists and that process
  started before it took the lease (a pid reused since, as in a restarted container, is
  not it);
- UNCLEAN: anything else: its process is gone (kill -9, a crash, the OOM killer, a
  second Ctrl-C), or it ran on another host, where nothing here can see it (counted:
  else two servers on two hosts could crash-loop a job between them for ever), or
  there is no lease to ask (a loop without one, in tests).
Only an UNCLEAN stop, and only for an attempt whose task had started (its start marker is
there: a job merely admitted cannot have stopped anything), adds one to the job's
`unclean_stops`; any other end of a started attempt sets it back to 0 (store.transitions).
An admission whose task never started (no start marker, whatever the stop) counts as
nothing: no retry spent, `unclean_stops` left as it was, nothing charged, its place kept.

Invariants: both go through `apply.end_attempt`, the one owner of "result there? finish :
requeue"; neither spends a job's retries (a restart or a drain is not the job's fault;
a crash loop ends a job without spending them either); both write only inside
`scope()`, the caller's fenced write transaction.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Callable, ContextManager

from sqlmodel import Session, select

from scheduler.loop import apply

from scheduler.runtime import jobfiles
from scheduler.store import Job, JobState

RESTARTED = "the scheduler restarted while it ran; queued again"
NEVER_STARTED = "the scheduler restarted before its task started; queued again in its place (it costs nothing)"
SHUT_DOWN = "the scheduler shut down; queued again"
UNCLEAN_STOP_LIMIT = 2  # unclean stops in a row at which a job ran: it is not started again


class LastStop(str, Enum):
    """How the server that held the lease before this one stopped (module docstring)."""

    NONE = "none"  # no server held this database's lease before
    CLEAN = "clean"
    LAPSED = "lapsed"
    UNCLEAN = "unclean"


def last_stop(lease) -> LastStop:
    """Read from `lease.previous`, the row `lease` replaced when it took over."""
    if lease is None:
        return LastStop.UNCLEAN
    previous = lease.previous
    if previous is None:
        return LastStop.NONE
    if previous.released:
        return LastStop.CLEAN
    if previous.alive_here(lease.host):
        return LastStop.LAPSED
    return LastStop.UNCLEAN


def crash_loop_message(n: int) -> str:
    return (f"running at {n} unclean scheduler stops in a row; not started again, in case it caused them "
            "(submit it again if it did not)")


def _lost(job: Job, results_dir: str, stop: LastStop) -> apply.Lost:
    """How recovery ends `job`'s attempt after a stop of kind `stop`."""
    if not jobfiles.started_path(results_dir, job.id, job.attempts).exists():
        return apply.Lost("requeued", NEVER_STARTED, unclean_stops=job.unclean_stops)  # as if never admitted
    if stop is not LastStop.UNCLEAN:
        return apply.Lost("requeued", RESTARTED)  # costs nothing; its count starts again
    n = job.unclean_stops + 1
    if n >= UNCLEAN_STOP_LIMIT:
        return apply.Lost("failed", crash_loop_message(n), final=JobState.FAILED, unclean_stops=n)
    return apply.Lost("requeued", f"the scheduler restarted after an unclean stop while it ran ({n} in a row; "
                      f"at {UNCLEAN_STOP_LIMIT} it is not started again); queued again", unclean_stops=n)


def recover(scope: Callable[[], ContextManager[Session]], results_dir: str, meter: apply.UsageMeter, *,
            now: datetime, retry_limit: int, stop: LastStop = LastStop.UNCLEAN) -> dict[str, int]:
    """Settle every RUNNING job a previous server left, which stopped as `stop` says;
    returns counts by outcome ("failed": not started again, see the module's docstring).
    The time between the last usage record and the crash is not charged (nobody saw the
    task)."""
    counts = {"finished": 0, "requeued": 0, "failed": 0}
    with scope() as s:
        for job in s.exec(select(Job).where(Job.state == JobState.RUNNING)).all():
            ended = apply.end_attempt(s, job, results_dir, meter, at=now, retry_limit=retry_limit,
                                      lost=_lost(job, results_dir, stop))
            if ended.outcome == apply.Outcome.FINISHED:
                counts["finished"] += 1
            elif ended.outcome == apply.Outcome.REQUEUED:
                counts["requeued"] += 1
            elif ended.outcome == apply.Outcome.ENDED:
                counts["failed"] += 1
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
