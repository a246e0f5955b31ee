"""Load: build the policy's Snapshot from the database (the first step of load, decide, apply).

Invariants: one read transaction; nothing is written; times become epoch seconds for
quota/. Active jobs are read as light column rows (`JobRow`), not ORM objects. The loop
keeps one incremental cache, `SnapshotLoader`: rows and a quota.PolicyState fed only with
the jobs that changed (a change cursor on job events), so a cycle reads what changed, not
the whole queue. Running jobs whose node is gone stay in the state (they still count
against their account) until the loop requeues them.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from quota import (
    AccountTree,
    Capacity,
    PendingRequest,
    PolicyConfig,
    PolicyState,
    RunningJob,
    Snapshot,
)
from scheduler.services.accounts import specs_from_rows
from scheduler.services.capacity import capacity_from_rows
from scheduler.services.settings import AttemptLimits, policy_from_rows
from scheduler.services.usage import decayed_by_account
from scheduler.store import Account, Job, JobEvent, JobState, Node, Setting

_J = Job.__table__.c
# JSON columns come back as text and are decoded only when used (every waiting job is read
# every cycle, and decoding specs nobody looks at was most of the cost of a cycle).
_COLUMNS = (_J.id, _J.account_id, _J.state, _J.version, _J.slices, _J.queue_seq, _J.submitted_at, _J.started_at,
            _J.node, sa.type_coerce(_J.gpu_slices, sa.Text), _J.attempts, _J.model, _J.framework, _J.mode,
            sa.type_coerce(_J.spec, sa.Text), _J.reason, _J.reason_message, _J.finished_at, _J.failures,
            _J.time_limit_s)


def _json(text, default):
    if text is None or text == "null":
        return default
    return json.loads(text) if isinstance(text, (str, bytes)) else text  # psycopg decodes json itself


class JobRow(NamedTuple):
    """What the loop needs of an active job; `transition()` accepts it like a Job.
    `gpu_slices_json` and `spec_json` are raw JSON: use the properties."""

    id: int
    account_id: int
    state: JobState
    version: int
    slices: int
    queue_seq: float
    submitted_at: datetime
    started_at: datetime | None
    node: str | None
    gpu_slices_json: str | None
    attempts: int
    model: str
    framework: str | None
    mode: str
    spec_json: str | None
    reason: str | None
    reason_message: str | None
    finished_at: datetime | None
    failures: int
    time_limit_s: float | None

    @property
    def gpu_slices(self) -> list:
        return _json(self.gpu_slices_json, [])

    @property
    def spec(self) -> dict:
        return _json(self.spec_json, {})


# Built once (the loop runs them every cycle; building a statement costs more than running it)
_ACTIVE = sa.select(*_COLUMNS).where(_J.state.in_([JobState.PENDING, JobState.RUNNING]))
_BY_IDS = sa.select(*_COLUMNS).where(_J.id.in_(sa.bindparam("ids", expanding=True)))
_RUNNING = sa.select(*_COLUMNS).where(_J.state == JobState.RUNNING)


# SQLite: the same columns read through the driver's cursor, in the session's transaction.
# SQLAlchemy's result processing (a regular expression per stored time, then UTCDateTime)
# was most of the cost of a re-read; the driver gives text, parsed here by
# `datetime.fromisoformat` (SQLAlchemy stores naive UTC). PostgreSQL keeps the statements
# above (psycopg gives datetimes).
_RAW_SELECT = (f"SELECT {', '.join(f.removesuffix('_json') for f in JobRow._fields)} "
               f"FROM {Job.__tablename__} WHERE ")
_RAW_ACTIVE = _RAW_SELECT + f"state IN ('{JobState.PENDING.value}', '{JobState.RUNNING.value}')"


_STATES = {s.value: s for s in JobState}


def _fetch(conn, sql: str, params: tuple) -> list[tuple]:
    """All rows of `sql` through the SQLite driver's cursor, in the session's transaction."""
    cursor = conn.connection.cursor()
    try:
        return cursor.execute(sql, params).fetchall()
    finally:
        cursor.close()


def _raw_rows(conn, sql: str, params: tuple) -> list[JobRow]:
    rows = _fetch(conn, sql, params)
    state, parse, utc = _STATES.__getitem__, datetime.fromisoformat, UTC
    return [JobRow(r[0], r[1], state(r[2]), r[3], r[4], r[5], parse(r[6]).replace(tzinfo=utc),
                   r[7] and parse(r[7]).replace(tzinfo=utc), *r[8:17], r[17] and parse(r[17]).replace(tzinfo=utc),
                   r[18], r[19])
            for r in rows]


def running_jobs(session: Session) -> list[JobRow]:
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        return _raw_rows(conn, _RAW_SELECT + f"state = '{JobState.RUNNING.value}'", ())
    return [JobRow(r[0], r[1], JobState(r[2]), *r[3:]) for r in conn.execute(_RUNNING)]


def active_jobs(session: Session, ids=None) -> list[JobRow]:
    """Active jobs as JobRows; with `ids`, those jobs whatever their state."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        if ids is None:
            return _raw_rows(conn, _RAW_ACTIVE, ())
        ids = tuple(ids)
        out: list[JobRow] = []
        for at in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            chunk = ids[at:at + 900]
            if chunk:
                out += _raw_rows(conn, _RAW_SELECT + f"id IN ({', '.join('?' * len(chunk))})", chunk)
        return out
    rows = conn.execute(_ACTIVE) if ids is None else conn.execute(_BY_IDS, {"ids": list(ids)})
    return [JobRow(r[0], r[1], JobState(r[2]), *r[3:]) for r in rows]


@dataclass(frozen=True)
class Loaded:
    snapshot: Snapshot
    jobs: dict[int, JobRow]  # the active jobs by id, as loaded (with their version)
    account_ids: dict[str, int]


@dataclass
class Synced:
    """What `SnapshotLoader.sync` gives the loop: the live PolicyState and the rows it was
    fed from. `jobs` is the loader's own dict (no copy): valid until the next sync."""

    state: PolicyState
    jobs: dict[int, JobRow]
    tree: AccountTree
    capacity: Capacity
    config: PolicyConfig
    half_life_s: float
    account_ids: dict[str, int]
    changed: list[int]  # the jobs re-read by this sync (new, or moved since the last one); none after a rebuild
    rebuilt: bool = False  # the state was built afresh from every active row (changed is empty then)
    attempt: AttemptLimits = AttemptLimits()  # the settings each script attempt's payload carries


_A = Account.__table__.c
_N = Node.__table__.c
_S = Setting.__table__.c
_E = JobEvent.__table__.c
# The policy inputs' rows, read once a cycle and built from (only when they changed), in
# the column order of accounts.specs_from_rows and capacity.capacity_from_rows.
_ACCOUNT_ROWS = sa.select(_A.id, _A.name, _A.parent_id, _A.weight, _A.guaranteed_slices, _A.max_slices,
                          _A.max_pending).order_by(_A.id)
_NODE_ROWS = sa.select(_N.name, _N.gpus, _N.slices_per_gpu, _N.gpu_type).where(_N.active == sa.true()).order_by(_N.name)
_SETTING_ROWS = sa.select(_S.key, _S.value).order_by(_S.key)
_LAST_EVENT = sa.select(sa.func.max(_E.id))
_EVENTS_SINCE = sa.select(_E.id, _E.job_id).where(_E.id > sa.bindparam("after"))


def _events_since(conn, bound: dict) -> list:
    """(event id, job id) of the job events after `bound["after"]`; on SQLite through the
    driver's cursor, as `_raw_rows` (a cycle reads a few hundred)."""
    if conn.dialect.name != "sqlite":
        return conn.execute(_EVENTS_SINCE, bound).all()
    return _fetch(conn, f"SELECT id, job_id FROM {JobEvent.__tablename__} WHERE id > ?", (bound["after"],))


def event_horizon(engine) -> int | None:
    """The largest job_event id below which every event is committed (PostgreSQL; None on
    SQLite, whose writers are serialised so a transaction's own read is the horizon).

    Every transaction that adds a job event writes the job table first (submit, transition),
    so once `LOCK TABLE job IN SHARE MODE` is granted none of them is in flight: ids up to
    the max are final. The lock is held by this short transaction only (it takes no other
    lock, so it cannot deadlock), never by the cycle's write transaction."""
    if engine.dialect.name == "sqlite":
        return None
    with Session(engine) as s:
        s.connection().exec_driver_sql(f"LOCK TABLE {Job.__tablename__} IN SHARE MODE")
        top = s.connection().execute(_LAST_EVENT).scalar()
        s.commit()
    return top or 0


class SnapshotLoader:
    """The loop's one incremental cache: the active jobs' rows and a quota.PolicyState fed
    with what changed (the simulator drives the same PolicyState).

    Change cursor: every status change and every submission appends a JobEvent in the same
    transaction (scheduler/store/transitions.py), so the jobs to re-read are those with an
    event past the last id seen; a sync costs what changed, not a pass over the queue. Each
    re-read job is taken out of the state (wherever the state has it: queued, running, or
    moved there by the last `state.cycle`) and put back as its row now says. Accounts, active
    nodes and settings are small and read every time; the tree, capacity and settings built
    from them are rebuilt, and with them the whole state, only when those rows differ.
    Reasons written by the loop do not move the cursor (they are not status changes).
    The loop's own admissions and SUCCEEDED settlements are not read back: it hands the
    loader the rows it wrote (`note_admitted`, `note_finished`) and their events are skipped.
    Requests the loop holds back (`withhold`) are kept out of the state until released.
    On PostgreSQL the caller bounds the events read by `event_horizon` (ids are taken
    before commit, so a later id can commit first); on SQLite writers are serialised.
    After a failed cycle the caller drops the loader: a new one reads everything again.
    `load()` equals a fresh load (tests check it)."""

    def __init__(self) -> None:
        self.rows: dict[int, JobRow] = {}  # the active jobs as last read
        self.state: PolicyState | None = None
        self.reasons_written: dict[tuple[int, int], tuple[str, str]] = {}  # (account id, slices) -> reason
        self._cursor = 0  # the last job_event id seen
        self._built_from: tuple | None = None  # (config, tree, capacity) the state was built with
        self._names: Mapping[int, str] = {}
        self._account_ids: dict[str, int] = {}
        self._inputs: dict[str, tuple[object, object]] = {}  # kind -> (raw rows, what was built from them)
        self._held: dict[int, PendingRequest] = {}  # requests withheld from the state
        self.by_framework: dict[str | None, set[int]] = {}  # pending job ids per framework
        self.timed: set[int] = set()  # the running jobs (as last read) with a time limit
        self._own: dict[int, int] = {}  # job id -> event id: its events up to there are the loop's own, known

    @property
    def account_names(self) -> Mapping[int, str]:
        return self._names

    def _cached(self, kind: str, raw, build):
        hit = self._inputs.get(kind)
        if hit is not None and hit[0] == raw:
            return hit[1]
        built = build(raw)
        self._inputs[kind] = (raw, built)
        return built

    def policy_inputs(self, session: Session):
        """(PolicySettings, AccountTree, Capacity, {account id: name}), each built from
        the rows read here (once a cycle), and only when those rows changed."""
        conn = session.connection()
        settings = self._cached("settings", tuple(tuple(r) for r in conn.execute(_SETTING_ROWS).all()),
                                policy_from_rows)
        tree, names = self._cached("accounts", tuple(tuple(r) for r in conn.execute(_ACCOUNT_ROWS).all()),
                                   lambda rows: (AccountTree.build(specs_from_rows(rows)),
                                                 {r[0]: r[1] for r in rows}))
        capacity = self._cached("nodes", tuple(tuple(r) for r in conn.execute(_NODE_ROWS).all()),
                                capacity_from_rows)
        return settings, tree, capacity, names

    def sync(self, session: Session, config: PolicyConfig | None = None, horizon: int | None = None) -> Synced:
        """Bring the rows and the state up to the database (see the class docstring)."""
        settings, tree, capacity, names = self.policy_inputs(session)
        config = config or settings.config
        conn = session.connection()
        if self.state is None or self._built_from != (config, tree, capacity):
            top = conn.execute(_LAST_EVENT).scalar() or 0
            self._cursor = top if horizon is None else min(top, horizon)
            self._build(session, tree, capacity, config, names)
            changed = []  # all new: reasons_written is empty, so every group is written anyway
            rebuilt = True
        else:
            bound = {"after": self._cursor}
            ids: set[int] = set()
            own = self._own
            for event_id, job_id in _events_since(conn, bound):
                if horizon is None or event_id <= horizon:
                    self._cursor = max(self._cursor, event_id)
                    if event_id > own.get(job_id, 0):
                        ids.add(job_id)
            if own:
                self._own = {j: m for j, m in own.items() if m > self._cursor}
            changed = sorted(ids)
            rebuilt = False
            for chunk in range(0, len(changed), 900):
                fresh = {j.id: j for j in active_jobs(session, changed[chunk:chunk + 900])}
                for job_id in changed[chunk:chunk + 900]:
                    job = fresh.get(job_id)
                    if job is not None and job.state == JobState.RUNNING and self._runs_as(job):
                        self._untrack_row(job_id)  # the state runs it already (the loop admitted it)
                        self.rows[job_id] = job
                        if job.time_limit_s is not None:
                            self.timed.add(job_id)
                        continue
                    self._drop(job_id)
                    if job is not None and job.state in (JobState.PENDING, JobState.RUNNING):
                        self._add(job)
        return Synced(self.state, self.rows, tree, capacity, config, settings.half_life_s, self._account_ids,
                      changed, rebuilt, settings.attempt)

    def _build(self, session: Session, tree, capacity, config: PolicyConfig, names) -> None:
        self.state = PolicyState(tree, capacity, config, ties_by_id=True)
        self._built_from = (config, tree, capacity)
        self._names = names
        self._account_ids = {v: k for k, v in names.items()}
        self.rows, self._held, self.by_framework, self.reasons_written = {}, {}, {}, {}
        self.timed, self._own = set(), {}
        for job in active_jobs(session):  # any order: the state's queues break ties by id, as decide's
            self._add(job)

    def _request(self, job: JobRow) -> PendingRequest:
        work = job.spec.get("seconds") if self.state.config.ordering == "finish-time" else None
        return PendingRequest(job.id, self._names.get(job.account_id, f"#{job.account_id}"), job.slices,
                              seq=job.queue_seq, submitted_at=job.submitted_at.timestamp(), work_s=work)

    def _add(self, job: JobRow) -> None:
        self.rows[job.id] = job
        if job.state == JobState.PENDING:
            self.state.submit(self._request(job))
            self.by_framework.setdefault(job.framework, set()).add(job.id)
        else:
            if job.time_limit_s is not None:
                self.timed.add(job.id)
            running = RunningJob(job.id, self._names.get(job.account_id, f"#{job.account_id}"), job.node or "",
                                 tuple(tuple(x) for x in job.gpu_slices),
                                 (job.started_at or job.submitted_at).timestamp())
            self.state.add_running(running, self._request(job))

    def _runs_as(self, job: JobRow) -> bool:
        """The state has `job` running exactly as its row says (the last `state.cycle`
        admitted it and the loop wrote that admission)."""
        r = self.state.running.get(job.id)
        return (r is not None and r.node == (job.node or "") and job.id not in self._held
                and r.started_at == (job.started_at or job.submitted_at).timestamp()
                and r.gpu_slices == tuple(tuple(x) for x in job.gpu_slices))

    def _untrack_row(self, job_id: int) -> JobRow | None:
        job = self.rows.pop(job_id, None)
        self.timed.discard(job_id)
        if job is not None:
            ids = self.by_framework.get(job.framework)
            if ids is not None:
                ids.discard(job_id)
        return job

    def _drop(self, job_id: int) -> None:
        """Take a job out of the state, wherever the state has it."""
        job = self._untrack_row(job_id)
        if job is None:
            return
        state = self.state
        if self._held.pop(job_id, None) is not None:
            return
        if job_id in state.running:
            state.finish(job_id)
        else:
            state.cancel(job_id, self._names.get(job.account_id, f"#{job.account_id}"))

    def withhold(self, ids: set[int]) -> list[int]:
        """Keep exactly these pending jobs out of the state (the loop holds them back);
        release the others withheld before, and return those."""
        released = [j for j in self._held if j not in ids]
        for job_id in released:
            self.state.submit(self._held.pop(job_id))
        for job_id in ids:
            job = self.rows.get(job_id)
            if job_id in self._held or job is None or job.state != JobState.PENDING:
                continue
            account = self._names.get(job.account_id, f"#{job.account_id}")
            if self.state.cancel(job_id, account):
                self._held[job_id] = self._request(job)
        return released

    def load(self, session: Session, now: datetime, config=None, usage: Mapping[str, float] | None = None,
             usage_by_id: Callable[[float], Mapping[int, float]] | None = None) -> Loaded:
        """A Snapshot of the synced state, jobs in id order. `usage` by account name; or
        `usage_by_id(half_life_s)` by account id; or, with neither, the decayed usage read
        from the usage records."""
        synced = self.sync(session, config)
        names = self._names
        if usage is None and usage_by_id is not None:
            usage = {names[i]: v for i, v in usage_by_id(synced.half_life_s).items() if i in names}
        if usage is None:
            usage = decayed_by_account(session, now, synced.half_life_s)
        state = synced.state
        pending = [*state._infeasible_reqs.values(), *state.pending, *self._held.values()]
        running = [state.running[i] for i in sorted(state.running)]
        snap = Snapshot(tree=synced.tree, capacity=synced.capacity, pending=tuple(sorted(pending, key=_by_id)),
                        running=tuple(running), usage=dict(usage), now=now.timestamp(), config=synced.config)
        return Loaded(snap, dict(self.rows), self._account_ids)

    def event_mark(self, session: Session) -> int:
        """The largest job_event id the caller's write transaction sees (for `note_admitted`)."""
        return session.connection().execute(_LAST_EVENT).scalar() or 0

    def note_admitted(self, rows: list[JobRow], mark: int) -> None:
        """The caller committed these admissions, which the state's own cycle made (it runs
        them already): keep the rows as written (apply.admit_many(rows=...)) and skip their events
        up to `mark` (event_mark, read after them in the same transaction) rather than read
        them back. Sound because each row was changed under its version guard in that
        transaction: another writer's change to it commits after it, with a later event
        id (SQLite serialises writers; on PostgreSQL it waits for the row lock)."""
        for row in rows:
            self._untrack_row(row.id)
            self.rows[row.id] = row
            if row.time_limit_s is not None:
                self.timed.add(row.id)
            self._own[row.id] = mark

    def note_finished(self, job_ids, mark: int) -> None:
        """The caller's transaction has just ended these jobs (a final state: they never
        change again): out of the rows and the state now, their events up to `mark` skipped."""
        if self.state is None:
            return
        for job_id in job_ids:
            self._drop(job_id)
            self._own[job_id] = mark

    def note_reasons(self, reasons: Mapping[int, tuple[str | None, str | None]]) -> None:
        """Remember the pending reasons the caller has just committed (writing a reason does
        not bump a job's version, so the rows kept would otherwise hold the old one)."""
        for job_id, (reason, message) in reasons.items():
            row = self.rows.get(job_id)
            if row is not None:
                self.rows[job_id] = row._replace(reason=reason, reason_message=message)


def _by_id(request: PendingRequest):
    return request.id


def load_snapshot(session: Session, now: datetime, config=None, usage: Mapping[str, float] | None = None) -> Loaded:
    """A fresh load (no state kept between calls)."""
    return SnapshotLoader().load(session, now, config=config, usage=usage)
