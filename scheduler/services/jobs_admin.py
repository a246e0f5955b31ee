"""An admin's actions on one job, straight on the database: they work with the server down.

Invariants:
- A status change goes through store.transitions (guarded by version, one JobEvent); the
  job's row is read FOR UPDATE (PostgreSQL; on SQLite the write transaction holds the
  database from its first statement), so the loop cannot move it between read and write.
- A final or unknown job is refused with one line (DomainError, NotFound): nothing written.
- Not fenced by the leader lease, as the API's cancel is not. With a server running, its
  loop reads the cancelled event (its change cursor, docs/state.md) and ends a running
  attempt as after the API's cancel: it stops the task in Ray, charges the job's usage up
  to the cancel and clears its files. With none running, the attempt's task went with its
  server's Ray; the next server's recovery settles RUNNING jobs only, so the job stays
  CANCELLED even if an orphaned task published a result meanwhile, and the time since its
  last usage record is not charged (as after a crash).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from quota import limits
from scheduler.services import validate
from scheduler.services.errors import DomainError, NotFound
from scheduler.store import Job, JobState, LeaderLease, transition
from scheduler.store.lease import holder_of

CANCELLED_BY_ADMIN = "cancelled by an admin (fairgpu admin job cancel)"


@dataclass(frozen=True)
class Cancelled:
    job_id: int
    was: JobState  # PENDING or RUNNING
    server: str | None  # the server whose lease is current ("host pid N since ..."); None: none runs

    def describe(self) -> str:
        """One line for the admin: what became of the job and of its attempt, if it ran."""
        if self.was != JobState.RUNNING:
            return f"cancelled job {self.job_id} (was {self.was.value})"
        if self.server is not None:
            return f"cancelled job {self.job_id} (was RUNNING): the server at {self.server} stops its attempt"
        return (f"cancelled job {self.job_id} (was RUNNING): no server is running, so its attempt ended "
                "with the last one; the next server will not start it")


def cancel_job(session: Session, job_id: int, *, at: datetime) -> Cancelled:
    """Cancel a PENDING or RUNNING job (any account's), with or without a server running."""
    validate.number(limits.ID, job_id, "job_id")
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"no job {job_id}")
    was = JobState(job.state)
    if was.is_finished():
        raise DomainError(f"job {job_id} already finished ({was.value}); nothing to cancel")
    server = _running_server(session, at)
    transition(session, job, JobState.CANCELLED, at=at, message=CANCELLED_BY_ADMIN, refresh=False)
    return Cancelled(job_id, was, server)


def _running_server(session: Session, at: datetime) -> str | None:
    """The server holding a current lease, if its process may still run (a dead one on this
    host, its lease not yet lapsed, is none)."""
    holder = holder_of(session.get(LeaderLease, 1))
    if holder is None or holder.released or holder.expires_at <= at or holder.alive_here() is False:
        return None
    return holder.describe()
