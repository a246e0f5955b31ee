"""The one module that changes a job's status.

Invariants:
- ``Job.state`` moves only along ``ALLOWED``; finished states are terminal.
- Every change is a single guarded ``UPDATE ... WHERE id = :id AND version = :v``
  that bumps ``version``. A worker holding a stale copy updates zero rows and
  gets ``StaleJob``; it must reload and decide again.
- Every change appends exactly one ``JobEvent`` in the same transaction.
- The clock is an argument (``at``); nothing here reads the time.
- Timestamps follow the target state:
  * -> RUNNING: ``admitted_at`` and ``started_at`` = at, ``attempts`` + 1;
  * -> finished: ``finished_at`` = at;
  * RUNNING -> PENDING (preemption / requeue): placement (``node``, ``gpu``,
    ``gpu_slices``, ``ray_task_id``), ``admitted_at`` and ``started_at`` are
    cleared and ``preemptions`` + 1 when ``event == "preempted"``. The job keeps
    its ``queue_seq`` (its original place in its account's queue) unless the
    caller passes one, e.g. ``head_queue_seq(...)``.
  Explicit ``fields`` win over these defaults.
- ``reason`` / ``reason_message`` are set to the given values on every
  transition (so leaving them out clears a stale pending reason).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from scheduler.store.engine import StoreError
from scheduler.store.models import Job, JobEvent, JobState

P, R = JobState.PENDING, JobState.RUNNING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED

ALLOWED: dict[JobState, frozenset[JobState]] = {
    P: frozenset({R, C, F}),
    R: frozenset({S, F, C, P}),
    S: frozenset(),
    F: frozenset(),
    C: frozenset(),
}

EVENT_KINDS = frozenset(
    {"submitted", "admitted", "started", "preempted", "requeued", "finished", "failed", "cancelled"}
)
_DEFAULT_EVENT = {R: "admitted", P: "requeued", S: "finished", F: "failed", C: "cancelled"}

# Columns a caller may set alongside a transition.
SETTABLE_FIELDS = frozenset(
    {
        "node", "gpu", "gpu_slices", "result", "error", "ray_task_id", "queue_seq",
        "attempts", "admitted_at", "started_at", "finished_at", "slices", "spec",
    }
)


class InvalidTransition(StoreError):
    """A status change that ``ALLOWED`` forbids."""


class StaleJob(InvalidTransition):
    """The job changed since it was read (version mismatch): a stale worker lost the race."""


def transition(
    session: Session,
    job: Job,
    to: JobState,
    *,
    at: datetime,
    reason: str | None = None,
    message: str | None = None,
    event: str | None = None,
    **fields: Any,
) -> Job:
    """Move ``job`` to ``to`` if ``job.version`` is still current; return the refreshed job.

    ``job`` may be detached (read in an earlier session); use the returned object.
    """
    to = JobState(to)
    current = JobState(job.state)
    if to not in ALLOWED[current]:
        raise InvalidTransition(f"job {job.id}: cannot go from {current.value} to {to.value}")
    unknown = set(fields) - SETTABLE_FIELDS
    if unknown:
        raise TypeError(f"transition() cannot set {sorted(unknown)}")
    kind = event or _DEFAULT_EVENT[to]
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown job event kind {kind!r}")

    values: dict[str, Any] = {
        "state": to,
        "version": Job.version + 1,
        "reason": reason,
        "reason_message": message,
    }
    if to is R:
        values.update(admitted_at=at, started_at=at, attempts=Job.attempts + 1)
    elif to.is_finished():
        values["finished_at"] = at
    elif to is P:  # RUNNING -> PENDING
        values.update(node=None, gpu=None, gpu_slices=[], ray_task_id=None, admitted_at=None, started_at=None)
        if kind == "preempted":
            values["preemptions"] = Job.preemptions + 1
    values.update(fields)

    stmt = (
        sa.update(Job)
        .where(Job.id == job.id, Job.version == job.version, Job.state == current)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if session.exec(stmt).rowcount != 1:
        raise StaleJob(f"job {job.id} changed since it was read (version {job.version}); reload and retry")
    add_event(session, job.id, kind, message, at)
    session.flush()
    return session.get(Job, job.id, populate_existing=True)


def add_event(session: Session, job_id: int, kind: str, message: str | None, at: datetime) -> JobEvent:
    """Append an event to a job's history (no state change)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown job event kind {kind!r}")
    ev = JobEvent(job_id=job_id, kind=kind, message=message, at=at)
    session.add(ev)
    return ev


def submit_job(
    session: Session,
    *,
    account_id: int,
    model: str,
    framework: str | None,
    mode: str,
    slices: int,
    spec: dict[str, Any],
    at: datetime,
) -> Job:
    """Create a PENDING job and its "submitted" event.

    ``queue_seq`` is the submission time in epoch seconds: queues are FIFO by
    submission within an account, ties broken by ``id`` (order by
    ``(queue_seq, id)``). A requeued job may be given a smaller seq to go first.
    """
    if slices <= 0:
        raise StoreError(f"a job needs at least one slice, not {slices}")
    job = Job(
        account_id=account_id, model=model, framework=framework, mode=mode, slices=slices,
        spec=dict(spec), state=JobState.PENDING, queue_seq=at.timestamp(), submitted_at=at,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "submitted", None, at)
    session.flush()
    return job


def head_queue_seq(session: Session, job: Job) -> float:
    """A queue_seq that puts ``job`` ahead of every PENDING job of its account."""
    lowest = session.exec(
        select(sa.func.min(Job.queue_seq)).where(
            Job.account_id == job.account_id, Job.state == JobState.PENDING, Job.id != job.id
        )
    ).one()
    return job.queue_seq if lowest is None else min(job.queue_seq, lowest - 1.0)
