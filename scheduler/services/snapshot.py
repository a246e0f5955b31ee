"""Load: build the policy's Snapshot from the database (the first step of load, decide, apply).

Invariants: one read transaction; nothing is written; times become epoch seconds for
quota/. Active jobs are read as light column rows (`JobRow`, scheduler.store.jobrow: the job
row's one owner), not ORM objects. The loop
keeps one incremental cache, `SnapshotLoader`: rows and a quota.PolicyState fed only with
the jobs that changed (a change cursor on job events), so a cycle reads what changed, not
the whole queue. Running jobs whose node is gone stay in the state (they still count
against their account) until the loop requeues them. Gated jobs (a user's hold, or
dependencies not yet met: services.gates) are kept out of the state, and out of every
Snapshot, like the jobs the loop withholds, and go back in once their gate opens.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

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
from scheduler.services import remaining
from scheduler.services.gates import GateCache
from scheduler.services.settings import FINISH_TIME, AttemptLimits, policy_from_rows
from scheduler.services.usage import decayed_by_account
from scheduler.store import Account, Job, JobEvent, JobState, Node, Setting, jobrow
from scheduler.store.bulk import fetch_all
from scheduler.store.jobrow import JobRow


def running_jobs(session: Session) -> list[JobRow]:
    """Every RUNNING job as a JobRow (scheduler.store.jobrow reads and decodes it)."""
    return jobrow.running_jobs(session.connection())


def active_jobs(session: Session, ids=None) -> list[JobRow]:
    """Active jobs as JobRows; with `ids`, those jobs whatever their state."""
    return jobrow.active_jobs(session.connection(), ids)


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
    gated: Mapping[int, tuple[str, str]] = field(default_factory=dict)  # pending job -> (reason, message): services.gates


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
    driver's cursor, as the job rows (a cycle reads a few hundred)."""
    if conn.dialect.name != "sqlite":
        return conn.execute(_EVENTS_SINCE, bound).all()
    return fetch_all(conn, f"SELECT id, job_id FROM {JobEvent.__tablename__} WHERE id > ?", (bound["after"],))


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
        self._held: dict[int, PendingRequest] = {}  # requests withheld from the state (the loop's and gated)
        self._loop_held: set[int] = set()  # the ids the loop last withheld
        self.gates = GateCache()  # holds and dependencies (services.gates)
        self._settled: set[int] = set()  # jobs the loop ended (note_finished): a gate may wait for them
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
            self.gates.refresh(conn, ids | self._settled)
            self._settled = set()
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
        released = self._withhold(self._loop_held | set(self.gates.gated))
        if not rebuilt:
            changed.extend(released)
        return Synced(self.state, self.rows, tree, capacity, config, settings.half_life_s, self._account_ids,
                      changed, rebuilt, settings.attempt, self.gates.gated)

    def _build(self, session: Session, tree, capacity, config: PolicyConfig, names) -> None:
        self.state = PolicyState(tree, capacity, config, ties_by_id=True)
        self._built_from = (config, tree, capacity)
        self._names = names
        self._account_ids = {v: k for k, v in names.items()}
        self.rows, self._held, self.by_framework, self.reasons_written = {}, {}, {}, {}
        self.timed, self._own, self._settled = set(), {}, set()
        for job in active_jobs(session):  # any order: the state's queues break ties by id, as decide's
            self._add(job)
        self.gates.rebuild(session.connection())

    def _request(self, job: JobRow) -> PendingRequest:
        # finish-time ordering: the job's expected run time (services.remaining: hold seconds, time limit)
        work = remaining.work_s(job) if self.state.config.ordering == FINISH_TIME else None
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
        """Keep exactly these pending jobs out of the state (the loop holds them back), and
        the gated ones; release the others withheld before, and return those."""
        self._loop_held = set(ids)
        return self._withhold(self._loop_held | set(self.gates.gated))

    def _withhold(self, ids) -> list[int]:
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
        gated = synced.gated
        pending = [*state.waiting,
                   *(r for r in self._held.values() if r.id not in gated)]
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
            self._settled.add(job_id)

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
