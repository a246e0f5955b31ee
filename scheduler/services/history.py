"""The job history, read in one place: each job of a window with the attempts its events record.

``read(session, now=..., since=None, until=None)`` returns one frozen ``JobRecord`` per
job, in job id order. Its readers: ``fairgpu report`` (services.report: held and waiting
spans, waits, preemptions) and ``fairgpu simulate --from-db`` (sim.history: the trace
and what really happened). Neither walks job events itself.

Invariants:
- The window: a job is read iff it was submitted before ``until`` and had not finished
  before ``since`` (``finished_at`` unset or at/after ``since``); without them, every job
  on record. Only events before ``until`` are read. A job of an account that no longer
  exists is not read.
- An attempt starts at an "admitted" event (the slices are held from the admission;
  Ray's own "started" moves nothing) and ends at the job's next event in
  ``ENDS_ATTEMPT``: "preempted" or "requeued" (back to the queue, ``BACK_TO_QUEUE``),
  or "finished", "failed", "cancelled", "timeout" (the job is over, ``FINISHING``).
  ``Attempt.how`` is that event's kind. An "admitted" while an attempt is open, or an
  ending event while none is, changes no attempt (``store.transitions.ALLOWED`` lets
  neither happen). Events at one instant are taken in the order they were written.
- An attempt with no ending event read is open: still running at the window's end. Its
  ``how`` is None and its ``end`` is that end, ``min(now, until)`` (``now`` without
  ``until``), never before its start. This includes a job whose ending lies at or
  after ``until``; a job RUNNING now has its last attempt open.
- A job that never started (still waiting, or cancelled or failed while waiting) is
  read all the same, with no attempts; what to do with it is the caller's choice.
- ``ended`` is when a finishing event ended the job (at the end of its last attempt,
  or while it waited), if that event was read; else None.
- ``JobRecord.waiting(end)``: from submission to the first attempt, from each attempt
  that sent it back to the queue to the next, and from the last such until ``ended``
  (else ``end``); empty intervals left out.
- Times are aware UTC datetimes (``store.UTCDateTime``). Nothing is written; the clock
  is the ``now`` argument.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from scheduler.store import Account, Job, JobEvent, JobState
from scheduler.vocab import ADMITTED, BACK_TO_QUEUE, ENDS_ATTEMPT, FINISHING



@dataclass(frozen=True)
class Attempt:
    """Slices held from ``start`` to ``end``; ``how``: the event that ended it (None: open)."""

    start: datetime
    end: datetime
    how: str | None

    @property
    def open(self) -> bool:
        return self.how is None


@dataclass(frozen=True)
class JobRecord:
    """One job of the window: its row's figures and its attempts, oldest first."""

    id: int
    account: str  # the (leaf) account's name
    slices: int
    state: JobState  # as stored now
    submitted_at: datetime
    finished_at: datetime | None  # the row's, whether or not within the window
    attempts: tuple[Attempt, ...]
    ended: datetime | None  # the finishing event's time, if read

    @property
    def preemptions(self) -> int:
        return sum(a.how == "preempted" for a in self.attempts)

    def waiting(self, end: datetime) -> list[tuple[datetime, datetime]]:
        """The intervals it waited in the queue, ``end`` closing one still open."""
        out, queued = [], self.submitted_at
        for a in self.attempts:
            if queued is not None:
                out.append((queued, a.start))
            queued = a.end if a.how in BACK_TO_QUEUE else None
        if queued is not None:
            out.append((queued, self.ended or end))
        return [(a, b) for a, b in out if b > a]


def read(session: Session, *, now: datetime, since: datetime | None = None,
         until: datetime | None = None) -> tuple[JobRecord, ...]:
    """Every job of the window with its attempts (see the module docstring)."""
    j, e, a = Job.__table__.c, JobEvent.__table__.c, Account.__table__.c
    alive = []
    if until is not None:
        alive.append(j.submitted_at < until)
    if since is not None:
        alive.append(sa.or_(j.finished_at.is_(None), j.finished_at >= since))
    conn = session.connection()
    jobs = conn.execute(
        sa.select(j.id, a.name, j.slices, j.state, j.submitted_at, j.finished_at)
        .select_from(Job.__table__.join(Account.__table__, j.account_id == a.id))
        .where(*alive).order_by(j.id)
    ).all()
    in_window = [e.at < until] if until is not None else []
    events: dict[int, list[tuple[str, datetime]]] = {}
    for job_id, kind, at in conn.execute(
        sa.select(e.job_id, e.kind, e.at).select_from(JobEvent.__table__.join(Job.__table__, e.job_id == j.id))
        .where(*alive, *in_window, e.kind.in_(ENDS_ATTEMPT | {ADMITTED})).order_by(e.job_id, e.at, e.id)
    ):
        events.setdefault(job_id, []).append((kind, at))
    window_end = now if until is None else min(now, until)
    out = []
    for job_id, account, slices, state, submitted_at, finished_at in jobs:
        attempts, ended = _walk(events.get(job_id, ()), window_end)
        out.append(JobRecord(job_id, account, slices, JobState(state), submitted_at, finished_at, attempts, ended))
    return tuple(out)


def _walk(events, window_end: datetime) -> tuple[tuple[Attempt, ...], datetime | None]:
    attempts, opened, ended = [], None, None
    for kind, at in events:
        if kind == ADMITTED:
            opened = at if opened is None else opened
            continue
        if opened is not None:
            attempts.append(Attempt(opened, at, kind))
            opened = None
        if kind in FINISHING:
            ended = at
    if opened is not None:
        attempts.append(Attempt(opened, max(opened, window_end), None))
    return tuple(attempts), ended
