"""Load: build the policy's Snapshot from the database (the first step of load, decide, apply).

Invariants: one read transaction; nothing is written; times become epoch seconds for
quota/. Active jobs are read as light column rows (`JobRow`), not ORM objects, since the
loop reads every waiting job every cycle. Running jobs whose node is gone stay in the
snapshot (they still count against their account) until the loop requeues them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Mapping, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session

from quota import PendingRequest, RunningJob, Snapshot
from scheduler.services.accounts import load_tree
from scheduler.services.capacity import load_capacity
from scheduler.services.settings import policy_settings
from scheduler.services.usage import decayed_by_account
from scheduler.store import Account, Job, JobState, Node, Setting

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
# Read on the driver's cursor: every active job's (id, version) every cycle, where building
# SQLAlchemy rows for them cost more than the query (the states are constants, no binds).
_VERSIONS_SQL = (f"SELECT id, version FROM {Job.__tablename__} "
                 f"WHERE state IN ('{JobState.PENDING.name}', '{JobState.RUNNING.name}')")


def _active_versions(session: Session) -> dict[int, int]:
    cursor = session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.execute(_VERSIONS_SQL)
        return dict(cursor.fetchall())
    finally:
        cursor.close()


def active_jobs(session: Session, ids=None) -> list[JobRow]:
    """Active jobs as JobRows; with `ids`, those jobs whatever their state."""
    conn = session.connection()
    rows = conn.execute(_ACTIVE) if ids is None else conn.execute(_BY_IDS, {"ids": list(ids)})
    return [JobRow(r[0], r[1], JobState(r[2]), *r[3:]) for r in rows]


@dataclass(frozen=True)
class Loaded:
    snapshot: Snapshot
    jobs: dict[int, JobRow]  # the active jobs by id, as loaded (with their version)
    account_ids: dict[str, int]


_A = Account.__table__.c
_N = Node.__table__.c
_S = Setting.__table__.c
_ACCOUNT_ROWS = sa.select(_A.id, _A.name, _A.parent_id, _A.weight, _A.guaranteed_slices, _A.max_slices,
                          _A.max_pending).order_by(_A.id)
_NODE_ROWS = sa.select(_N.name, _N.gpus, _N.slices_per_gpu, _N.gpu_type).where(_N.active == sa.true()).order_by(_N.name)
_SETTING_ROWS = sa.select(_S.key, _S.value).order_by(_S.key)


class SnapshotLoader:
    """Loads snapshots cycle after cycle, re-reading only the active jobs that changed.

    Each load reads (id, version) of every active job, then full rows only for jobs that
    are new or whose version moved (every status change bumps the version, so a job the
    API cancelled or the loop admitted is re-read); the policy's requests are kept per
    job and rebuilt only for those, so a load costs the query plus what changed, not a
    pass over every waiting job in Python. Accounts, active nodes and settings
    are small and their raw rows are read every time, but the tree, capacity and policy
    settings built from them are rebuilt only when those rows differ from the last load.
    The result equals a fresh load (tests check it).
    """

    def __init__(self) -> None:
        self._rows: dict[int, JobRow] = {}  # the active jobs as last read
        self._versions: dict[int, int] = {}  # id -> version of the row kept
        self._pending: dict[int, PendingRequest] = {}  # id order
        self._running: dict[int, RunningJob] = {}  # id order
        self._unsorted: set[str] = set()
        self._names: Mapping[int, str] | None = None  # the account names the requests were built with
        self._finish_time = False
        self._account_ids: dict[str, int] = {}
        self._inputs: dict[str, tuple[object, object]] = {}  # kind -> (raw rows, what was built from them)

    def _cached(self, kind: str, raw, build):
        hit = self._inputs.get(kind)
        if hit is not None and hit[0] == raw:
            return hit[1]
        built = build(raw)
        self._inputs[kind] = (raw, built)
        return built

    def policy_inputs(self, session: Session):
        """(PolicySettings, AccountTree, Capacity, {account id: name}), each rebuilt only
        when its rows changed."""
        conn = session.connection()
        settings = self._cached("settings", tuple(conn.execute(_SETTING_ROWS).all()),
                                lambda _raw: policy_settings(session))
        accounts = tuple(tuple(r) for r in conn.execute(_ACCOUNT_ROWS).all())
        tree, names = self._cached("accounts", accounts, lambda _raw: (load_tree(session),
                                                                      {r[0]: r[1] for r in accounts}))
        capacity = self._cached("nodes", tuple(tuple(r) for r in conn.execute(_NODE_ROWS).all()),
                                lambda _raw: load_capacity(session))
        return settings, tree, capacity, names

    def load(self, session: Session, now: datetime, config=None, usage: Mapping[str, float] | None = None,
             usage_by_id: Callable[[float], Mapping[int, float]] | None = None) -> Loaded:
        """`usage` by account name; or `usage_by_id(half_life_s)` by account id; or, with
        neither, the decayed usage read from the usage records."""
        settings, tree, capacity, names = self.policy_inputs(session)
        if usage is None and usage_by_id is not None:
            usage = {names[i]: v for i, v in usage_by_id(settings.half_life_s).items() if i in names}
        config = config or settings.config
        finish_time = config.ordering == "finish-time"
        if names is not self._names or finish_time != self._finish_time:
            # requests carry account names (and, for finish-time ordering, the work):
            # build them all again
            self._versions, self._rows, self._pending, self._running = {}, {}, {}, {}
            self._names, self._finish_time = names, finish_time
            self._account_ids = {v: k for k, v in names.items()}
        versions = _active_versions(session)
        # set operations on dict views run in C: what left, and what is new or moved
        for job_id in self._versions.keys() - versions.keys():
            self._forget(job_id)
        changed = sorted(i for i, _v in versions.items() - self._versions.items())
        for chunk in range(0, len(changed), 900):
            for job in active_jobs(session, changed[chunk:chunk + 900]):
                if job.state not in (JobState.PENDING, JobState.RUNNING):  # finished meanwhile (PostgreSQL)
                    self._forget(job.id)
                    versions.pop(job.id, None)
                    continue
                versions[job.id] = job.version  # the version of the row kept
                self._keep(job, names, finish_time)
        self._versions = versions
        if usage is None:
            usage = decayed_by_account(session, now, settings.half_life_s)
        snap = Snapshot(tree=tree, capacity=capacity, pending=self._in_order("_pending"),
                        running=self._in_order("_running"), usage=dict(usage), now=now.timestamp(), config=config)
        return Loaded(snap, dict(self._rows), self._account_ids)

    def _forget(self, job_id: int) -> None:
        self._rows.pop(job_id, None)
        self._pending.pop(job_id, None)
        self._running.pop(job_id, None)

    def _keep(self, job: JobRow, names: Mapping[int, str], finish_time: bool) -> None:
        self._forget(job.id)
        self._rows[job.id] = job
        account = names.get(job.account_id, f"#{job.account_id}")
        if job.state == JobState.PENDING:
            work = job.spec.get("seconds") if finish_time else None
            self._put("_pending", PendingRequest(job.id, account, job.slices, seq=job.queue_seq,
                                                 submitted_at=job.submitted_at.timestamp(), work_s=work))
        else:
            self._put("_running", RunningJob(job.id, account, job.node or "", tuple(tuple(x) for x in job.gpu_slices),
                                             (job.started_at or job.submitted_at).timestamp()))

    def _put(self, which: str, request) -> None:
        """Requests are kept in id order (a fresh load's order); new jobs have the largest
        ids, so only a job that moves back (a requeue) makes a re-sort necessary."""
        kept = getattr(self, which)
        if kept and request.id < next(reversed(kept)):
            self._unsorted.add(which)
        kept[request.id] = request

    def _in_order(self, which: str) -> tuple:
        if which in self._unsorted:
            setattr(self, which, dict(sorted(getattr(self, which).items())))
            self._unsorted.discard(which)
        return tuple(getattr(self, which).values())

    def note_reasons(self, reasons: Mapping[int, tuple[str | None, str | None]]) -> None:
        """Remember the pending reasons the caller has just committed (writing a reason does
        not bump a job's version, so the rows kept would otherwise hold the old one)."""
        for job_id, (reason, message) in reasons.items():
            row = self._rows.get(job_id)
            if row is not None:
                self._rows[job_id] = row._replace(reason=reason, reason_message=message)


def load_snapshot(session: Session, now: datetime, config=None, usage: Mapping[str, float] | None = None) -> Loaded:
    """A fresh load (no state kept between calls)."""
    return SnapshotLoader().load(session, now, config=config, usage=usage)
