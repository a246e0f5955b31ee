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

A fenced attempt that may still run holds its slices (`Held`): recovery fences every
started attempt it ends, but one whose task may still run (no end marker, its heartbeat
fresh: `jobfiles.attempt_alive`; it stops itself once it sees the fence) is not ended
yet. Its job stays RUNNING on its node and slices, so the policy places no one else there
and the job does not start again while its old attempt may still write; the loop asks
each cycle (`Held.due`, files only) and ends it (`Held.release`) once its end marker is
there (ended at the marker's time) or its heartbeat went stale (ended at its last beat:
the last time it was seen running). Its start marker is kept until then.

Every slice-second is charged once, from what the attempt held, whoever led meanwhile:
`end_attempt` charges from the attempt's last usage record (the meter's, whichever server
wrote it) or else its task's start, up to its end as above, in the transaction that moves
the job; a job's version guard makes that happen once. So the time a paused leader's
attempts ran past its last charge is charged by the server that ends them.

Invariants: both go through `apply.end_attempt`, the one owner of "result there? finish :
requeue"; neither spends a job's retries (a restart or a drain is not the job's fault;
a crash loop ends a job without spending them either); both write only inside
`scope()`, the caller's fenced write transaction.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Callable, ContextManager

from sqlmodel import Session, select

from scheduler.loop import apply

from scheduler.runtime import jobfiles
from scheduler.store import Job, JobState, after_commit

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


@dataclass(frozen=True)
class HeldAttempt:
    """A fenced attempt that may still run: its job stays RUNNING until it ends."""

    attempt: int
    stop: LastStop  # how the server that ran it stopped (its unclean-stop count)


@dataclass
class Held:
    """The fenced attempts this server waits for (module docstring); memory only: the next
    leader's recovery finds them again from the RUNNING rows and the files."""

    results_dir: str
    attempts: dict[int, HeldAttempt] = field(default_factory=dict)  # job id -> its held attempt

    def __bool__(self) -> bool:
        return bool(self.attempts)

    def end_of(self, job_id: int, attempt: int, now: float, gone: bool = False) -> float | None:
        """When the attempt ended (epoch s), from its files; None while it may still run
        (`gone`: its server is known dead, so it does not: its last beat is its end)."""
        ended = jobfiles.read_ended(self.results_dir, job_id, attempt)
        if ended is not None and ended.get("ended_at") is not None:
            return float(ended["ended_at"])
        if not gone and jobfiles.attempt_alive(self.results_dir, job_id, attempt, now=now):
            return None
        beats = [_mtime(jobfiles.alive_path(self.results_dir, job_id, attempt)),
                 _mtime(jobfiles.started_path(self.results_dir, job_id, attempt))]
        return max((b for b in beats if b is not None), default=now)  # last seen running

    def due(self, now: datetime) -> dict[int, float]:
        """The held attempts that ended: job id -> end (epoch s). Files only, no database."""
        t = now.timestamp()
        return {job_id: end for job_id, h in self.attempts.items()
                if (end := self.end_of(job_id, h.attempt, t)) is not None}

    def release(self, session: Session, due: dict[int, float], meter: apply.UsageMeter, *, now: datetime,
                retry_limit: int) -> list[tuple[Job, apply.Ended]]:
        """End the `due` attempts (queued again in their place, or finished if a result is
        there), each charged up to its end; they leave `attempts` once `session` commits."""
        out = []
        for job_id, end in due.items():
            h = self.attempts[job_id]
            job = session.get(Job, job_id)
            if job is None:
                continue
            if job.state != JobState.RUNNING or job.attempts != h.attempt:  # cancelled meanwhile
                meter.charge(session, job, apply.ts(end), started_at=_started(self.results_dir, job_id, h.attempt))
                meter.forget(session, job_id)
                continue
            lost = _lost(job, self.results_dir, h.stop)
            lost = apply.Lost(lost.event, lost.message, charge_until=apply.ts(end), final=lost.final,
                              started_at=_started(self.results_dir, job_id, h.attempt),
                              unclean_stops=lost.unclean_stops)
            out.append((job, apply.end_attempt(session, job, self.results_dir, meter, at=now, lost=lost,
                                               retry_limit=retry_limit)))
        gone = list(due)
        after_commit(session, lambda: [self.attempts.pop(j, None) for j in gone])
        return out


def _mtime(path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _started(results_dir: str, job_id: int, attempt: int) -> float | None:
    """When the attempt's task started (epoch s): its start marker, else its end marker's."""
    at = _mtime(jobfiles.started_path(results_dir, job_id, attempt))
    if at is None:
        ended = jobfiles.read_ended(results_dir, job_id, attempt) or {}
        at = ended.get("started_at")
    return at


def holder_gone(lease) -> bool:
    """Whether the server `lease` took over is known dead (its process is gone on this
    host): its local Ray was ended before this one started (scheduler.runtime.ray_session),
    and a cluster ends a dead driver's tasks, so none of its attempts still runs."""
    previous = None if lease is None else lease.previous
    return previous is not None and not previous.released and previous.alive_here(lease.host) is False


def recover(scope: Callable[[], ContextManager[Session]], results_dir: str, meter: apply.UsageMeter, *,
            now: datetime, retry_limit: int, stop: LastStop = LastStop.UNCLEAN,
            held: Held | None = None, gone: bool = False) -> dict[str, int]:
    """Settle every RUNNING job a previous server left, which stopped as `stop` says;
    returns counts by outcome ("failed": not started again, see the module's docstring;
    "held": fenced attempts that may still run, left RUNNING in `held`; none if `gone`:
    the last server is known dead). An attempt that ended is charged from its last usage
    record up to its end (its end marker, or its last heartbeat)."""
    counts = {"finished": 0, "requeued": 0, "failed": 0, "held": 0}
    waiting = held if held is not None else Held(results_dir)
    t = now.timestamp()
    with scope() as s:
        for job in s.exec(select(Job).where(Job.state == JobState.RUNNING)).all():
            lost = _lost(job, results_dir, stop)
            started = _started(results_dir, job.id, job.attempts)
            if started is not None and jobfiles.settle_attempt(results_dir, job.id, job.attempts) is None:
                end = waiting.end_of(job.id, job.attempts, t, gone)  # fenced now (or before): has it stopped?
                if end is None:
                    waiting.attempts[job.id] = HeldAttempt(job.attempts, stop)
                    counts["held"] += 1
                    continue
                lost = apply.Lost(lost.event, lost.message, charge_until=apply.ts(end), started_at=started,
                                  final=lost.final, unclean_stops=lost.unclean_stops)
            ended = apply.end_attempt(s, job, results_dir, meter, at=now, retry_limit=retry_limit, lost=lost)
            if ended.outcome == apply.Outcome.FINISHED:
                counts["finished"] += 1
            elif ended.outcome == apply.Outcome.REQUEUED:
                counts["requeued"] += 1
            elif ended.outcome == apply.Outcome.ENDED:
                counts["failed"] += 1
    # after recovery no attempt is followed: every start marker but the held attempts' is of an ended one
    counts["markers_removed"] = jobfiles.remove_markers(
        results_dir, keep={(j, h.attempt) for j, h in waiting.attempts.items()})
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
