"""The one module that changes a job's status.

Invariants:
- ``Job.state`` moves only along ``ALLOWED``. Finished states end a job; the one way
  out of FAILED, CANCELLED or TIMEOUT is back to PENDING (``fairgpu requeue``, Slurm's
  ``scontrol requeue``), which clears ``finished_at``, ``result``, ``error`` and
  ``failures`` (a fresh set of retries). SUCCEEDED is terminal.
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
    its ``queue_seq``: its original place in its account's queue (submission
    order, then id), whatever ended its attempt;
  * RUNNING -> anything: ``unclean_stops`` = 0 (an attempt that ended any way but
    at an unclean scheduler stop breaks the run; scheduler.loop.recovery passes its count).
  Explicit ``fields`` win over these defaults.
- ``reason`` / ``reason_message`` are set to the given values on every
  transition (so leaving them out clears a stale pending reason).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from scheduler.store.bulk import execute_many
from scheduler.store.engine import StoreError
from scheduler.store.jobrow import insert_jobs, new_job
from scheduler.store.models import Job, JobEvent, JobState

P, R = JobState.PENDING, JobState.RUNNING
S, F, C, T = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT

ALLOWED: dict[JobState, frozenset[JobState]] = {
    P: frozenset({R, C, F}),
    R: frozenset({S, F, C, P, T}),
    S: frozenset(),
    F: frozenset({P}),  # requeue
    C: frozenset({P}),
    T: frozenset({P}),
}

EVENT_KINDS = frozenset(
    {"submitted", "admitted", "started", "preempted", "requeued", "finished", "failed", "cancelled", "timeout",
     "held", "released", "updated"}  # the last three change no state (services.control)
)
_DEFAULT_EVENT = {R: "admitted", P: "requeued", S: "finished", F: "failed", C: "cancelled", T: "timeout"}

# Columns a caller may set alongside a transition.
SETTABLE_FIELDS = frozenset(
    {
        "node", "gpu", "gpu_slices", "result", "error", "ray_task_id", "queue_seq", "time_limit_s",
        "attempts", "failures", "admitted_at", "started_at", "finished_at", "slices", "spec", "unclean_stops",
    }
)


class InvalidTransition(StoreError):
    """A status change that ``ALLOWED`` forbids."""


class StaleJob(InvalidTransition):
    """The job changed since it was read (version mismatch): a stale worker lost the race."""


_JOBS = Job.__table__
_EVENTS = JobEvent.__table__
_INSERT_EVENT = _EVENTS.insert()
_STMTS: dict[tuple, Any] = {}

# What a move to RUNNING sets beside the state, version, reason and the caller's fields:
# written once, here; the guarded UPDATE is built from it and `running_values` gives the
# same as values (for a caller that keeps the rows it moved rather than read them back).
_AT, _PLUS_ONE = "at", "+1"
ON_RUNNING = {"admitted_at": _AT, "started_at": _AT, "attempts": _PLUS_ONE}


def running_values(job, *, at: datetime, message: str | None = None, reason: str | None = None,
                   **fields: Any) -> dict[str, Any]:
    """The columns a move of ``job`` (PENDING) to RUNNING writes, by name, as values: what
    ``transition(job, RUNNING, at=at, message=message, reason=reason, **fields)`` leaves
    in the row (`ON_RUNNING`, and the state, version and reason every transition sets)."""
    values: dict[str, Any] = {"state": R, "version": job.version + 1, "reason": reason, "reason_message": message}
    values.update({name: at if how == _AT else getattr(job, name) + 1 for name, how in ON_RUNNING.items()})
    values.update(fields)
    return values


def _update_statement(current: JobState, to: JobState, preempted: bool, field_names: tuple[str, ...]):
    """The guarded UPDATE for one shape of transition, built once and reused (bind
    parameters take their types from the columns, so JSON and UTC times bind as usual)."""
    key = (current, to, preempted, field_names)
    stmt = _STMTS.get(key)
    if stmt is None:
        c = _JOBS.c
        values: dict[str, Any] = {
            "state": sa.bindparam("new_state", type_=c.state.type),
            "version": c.version + 1,
            "reason": sa.bindparam("new_reason", type_=c.reason.type),
            "reason_message": sa.bindparam("new_message", type_=c.reason_message.type),
        }
        if to is R:
            at = sa.bindparam("at", type_=c.started_at.type)
            values.update({name: at if how == _AT else c[name] + 1 for name, how in ON_RUNNING.items()})
        elif to.is_finished():
            values["finished_at"] = sa.bindparam("at", type_=c.finished_at.type)
        elif to is P:  # RUNNING -> PENDING
            values.update(node=None, gpu=None, gpu_slices=sa.bindparam("empty_slices", type_=c.gpu_slices.type),
                          ray_task_id=None, admitted_at=None, started_at=None)
            if preempted:
                values["preemptions"] = c.preemptions + 1
            if current.is_finished():  # requeued after it ended: a fresh start
                values.update(finished_at=None, result=sa.null(), error=None,
                              failures=sa.literal_column("0", sa.Integer))
        if current is R:  # an attempt ends: its unclean stops in a row start again (recovery passes its own)
            values["unclean_stops"] = sa.literal_column("0", sa.Integer)
        for name in field_names:  # explicit fields win over the defaults above
            values[name] = sa.bindparam(f"f_{name}", type_=c[name].type)
        stmt = _JOBS.update().where(
            c.id == sa.bindparam("job_id", type_=c.id.type),
            c.version == sa.bindparam("job_version", type_=c.version.type),
            c.state == sa.bindparam("from_state", type_=c.state.type),
        ).values(values)
        _STMTS[key] = stmt
    return stmt


def transition(
    session: Session,
    job: Job,
    to: JobState,
    *,
    at: datetime,
    reason: str | None = None,
    message: str | None = None,
    event: str | None = None,
    refresh: bool = True,
    **fields: Any,
) -> Job | None:
    """Move ``job`` to ``to`` if ``job.version`` is still current; return the refreshed job
    (or None with ``refresh=False``, for hot paths that do not need it).

    ``job`` may be detached (read in an earlier session) or any object with ``id``,
    ``version`` and ``state``; use the returned object.
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

    names = tuple(sorted(fields))
    stmt = _update_statement(current, to, to is P and kind == "preempted", names)
    params: dict[str, Any] = {
        "job_id": job.id, "job_version": job.version, "from_state": current,
        "new_state": to, "new_reason": reason, "new_message": message, "at": at, "empty_slices": [],
    }
    params.update({f"f_{name}": fields[name] for name in names})
    conn = session.connection()
    if conn.execute(stmt, params).rowcount != 1:
        raise StaleJob(f"job {job.id} changed since it was read (version {job.version}); reload and retry")
    conn.execute(_INSERT_EVENT, {"job_id": job.id, "kind": kind, "message": message, "at": at})
    if not refresh:
        return None
    return session.get(Job, job.id, populate_existing=True)


@dataclass(frozen=True)
class Move:
    """One job's part in ``transition_many``: like the arguments of ``transition``."""

    job: Any
    at: datetime
    message: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class StaleBatch(StoreError):
    """A job read under the write lock changed anyway: the whole transaction must go."""


def transition_many(session: Session, moves: list[Move], to: JobState, *, event: str | None = None,
                    fresh: bool = False) -> list[Move]:
    """``transition`` for many jobs at once, with the same guard and events: one
    executemany UPDATE and one executemany INSERT per shape of move (a savepoint
    around each). If any job of a batch is stale, that batch is undone and its
    moves are made one by one. Returns the moves made; stale jobs are left out
    (where ``transition`` raises StaleJob).

    ``fresh=True`` says the caller read every job's version in this same transaction.
    On SQLite that transaction holds the write lock from its first statement, so no
    version can have moved: the savepoint is skipped, and a batch that still misses a
    row raises StaleBatch (roll the transaction back). Elsewhere ``fresh`` changes
    nothing (PostgreSQL's READ COMMITTED lets another transaction commit in between)."""
    to = JobState(to)
    kind = event or _DEFAULT_EVENT[to]
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown job event kind {kind!r}")
    groups: dict[tuple, list[Move]] = {}
    for m in moves:
        current = JobState(m.job.state)
        if to not in ALLOWED[current]:
            raise InvalidTransition(f"job {m.job.id}: cannot go from {current.value} to {to.value}")
        unknown = set(m.fields) - SETTABLE_FIELDS
        if unknown:
            raise TypeError(f"transition() cannot set {sorted(unknown)}")
        groups.setdefault((current, tuple(sorted(m.fields))), []).append(m)
    done: list[Move] = []
    for (current, names), group in groups.items():
        if len(group) > 1 and session.get_bind().dialect.supports_sane_multi_rowcount:
            stmt = _update_statement(current, to, to is P and kind == "preempted", names)
            params = [{"job_id": m.job.id, "job_version": m.job.version, "from_state": current, "new_state": to,
                       "new_reason": None, "new_message": m.message, "at": m.at, "empty_slices": [],
                       **{f"f_{n}": m.fields[n] for n in names}} for m in group]
            locked = fresh and session.get_bind().dialect.name == "sqlite"
            savepoint = None if locked else session.begin_nested()
            conn = session.connection()  # emits the SAVEPOINT, if any
            matched = execute_many(conn, stmt, params)  # executemany, less SQLAlchemy's per-row work
            if locked and matched != len(group):
                raise StaleBatch(f"{len(group) - matched} of {len(group)} jobs changed under the write lock")
            if matched == len(group):
                execute_many(conn, _INSERT_EVENT, [{"job_id": m.job.id, "kind": kind, "message": m.message,
                                                    "at": m.at} for m in group])
                if savepoint is not None:
                    savepoint.commit()
                done.extend(group)
                continue
            savepoint.rollback()
        for m in group:
            try:
                transition(session, m.job, to, at=m.at, message=m.message, event=event, refresh=False, **m.fields)
            except StaleJob:
                continue
            done.append(m)
    return done


def update_job(session: Session, job, *, at: datetime, message: str, **fields: Any) -> None:
    """Change a job's own fields without a status change (``fairgpu update``): the same
    guarded UPDATE (id, version and state as read; ``version`` + 1, so a worker holding
    the old row gets StaleJob) and one "updated" event, so the loop's change cursor
    re-reads the job. Only ``UPDATABLE_FIELDS``."""
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown or not fields:
        raise TypeError(f"update_job() cannot set {sorted(unknown) or 'nothing'}")
    c = _JOBS.c
    stmt = _JOBS.update().where(c.id == job.id, c.version == job.version, c.state == JobState(job.state)) \
        .values(version=c.version + 1, **fields)
    conn = session.connection()
    if conn.execute(stmt).rowcount != 1:
        raise StaleJob(f"job {job.id} changed since it was read (version {job.version}); reload and retry")
    conn.execute(_INSERT_EVENT, {"job_id": job.id, "kind": "updated", "message": message, "at": at})


UPDATABLE_FIELDS = frozenset({"slices", "time_limit_s"})


def add_event(session: Session, job_id: int, kind: str, message: str | None, at: datetime) -> None:
    """Append an event to a job's history (no state change)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown job event kind {kind!r}")
    session.connection().execute(_INSERT_EVENT, {"job_id": job_id, "kind": kind, "message": message, "at": at})


def submit_jobs(
    session: Session,
    *,
    count: int,
    account_id: int,
    model: str,
    framework: str | None,
    mode: str,
    slices: int,
    spec: dict[str, Any],
    at: datetime,
    time_limit_s: float | None = None,
) -> list[int]:
    """A job array: ``count`` identical PENDING jobs and their "submitted" events
    (``submit_job_arrays`` with one array; one job is an array of one). Returns the ids
    in ascending order.

    ``queue_seq`` is the submission time in epoch seconds: queues are FIFO by
    submission within an account, ties broken by ``id`` (order by
    ``(queue_seq, id)``), so an array's jobs run in id order. A requeued job keeps
    its seq, so its place. ``time_limit_s`` is each attempt's wall-time limit, as
    resolved by the caller."""
    (ids,) = submit_job_arrays(session, [(count, {"account_id": account_id, "model": model, "framework": framework,
                                                   "mode": mode, "slices": slices, "spec": spec, "at": at,
                                                   "time_limit_s": time_limit_s})])
    return ids


def submit_job_arrays(session: Session, arrays: list[tuple[int, dict[str, Any]]]) -> list[list[int]]:
    """Several job arrays at once, each (count, ``submit_jobs`` keyword arguments but
    count): every job in one multi-row INSERT and every "submitted" event in another (a
    group commit's batch). Returns each array's ids, ascending, in the order given."""
    rows = []
    for count, kw in arrays:
        if count <= 0:
            raise StoreError(f"a job array needs at least one job, not {count}")
        row = new_job(**kw)
        rows.extend(dict(row) for _ in range(count))
    if not rows:
        return []
    ids = insert_jobs(session.connection(), rows)
    out, start = [], 0
    for count, _ in arrays:
        out.append(sorted(ids[start:start + count]))
        start += count
    return out
