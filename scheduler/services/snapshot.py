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
            sa.type_coerce(_J.spec, sa.Text), _J.reason, _J.reason_message, _J.finished_at)


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

    @property
    def gpu_slices(self) -> list:
        return _json(self.gpu_slices_json, [])

    @property
    def spec(self) -> dict:
        return _json(self.spec_json, {})


# Built once (the loop runs them every cycle; building a statement costs more than running it)
_ACTIVE = sa.select(*_COLUMNS).where(_J.state.in_([JobState.PENDING, JobState.RUNNING]))
_BY_IDS = sa.select(*_COLUMNS).where(_J.id.in_(sa.bindparam("ids", expanding=True)))
_VERSIONS = sa.select(_J.id, _J.version).where(_J.state.in_([JobState.PENDING, JobState.RUNNING]))


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
    API cancelled or the loop admitted is re-read). Accounts, active nodes and settings
    are small and their raw rows are read every time, but the tree, capacity and policy
    settings built from them are rebuilt only when those rows differ from the last load.
    The result equals a fresh load (tests check it).
    """

    def __init__(self) -> None:
        self._rows: dict[int, JobRow] = {}
        self._requests: dict[int, tuple[int, str, bool, object]] = {}  # id -> (version, account, ft, request)
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
        conn = session.connection()
        versions = dict(conn.execute(_VERSIONS).all())
        stale = [i for i, v in versions.items() if i not in self._rows or self._rows[i].version != v]
        rows = {i: r for i, r in self._rows.items() if i in versions}
        for chunk in range(0, len(stale), 900):
            for job in active_jobs(session, stale[chunk:chunk + 900]):
                rows[job.id] = job
        rows = {i: r for i, r in rows.items() if r.state in (JobState.PENDING, JobState.RUNNING)}
        self._rows = rows
        config = config or settings.config
        finish_time = config.ordering == "finish-time"
        pending, running = [], []
        cache = {}
        for job in sorted(rows.values(), key=lambda j: j.id):
            account = names.get(job.account_id, f"#{job.account_id}")
            hit = self._requests.get(job.id)
            if hit is not None and hit[0] == job.version and hit[1] == account and hit[2] == finish_time:
                req = hit[3]
            elif job.state == JobState.PENDING:
                work = job.spec.get("seconds") if finish_time else None
                req = PendingRequest(job.id, account, job.slices, seq=job.queue_seq,
                                     submitted_at=job.submitted_at.timestamp(), work_s=work)
            else:
                req = RunningJob(job.id, account, job.node or "", tuple(tuple(x) for x in job.gpu_slices),
                                 (job.started_at or job.submitted_at).timestamp())
            cache[job.id] = (job.version, account, finish_time, req)
            (pending if job.state == JobState.PENDING else running).append(req)
        self._requests = cache
        if usage is None:
            usage = decayed_by_account(session, now, settings.half_life_s)
        snap = Snapshot(tree=tree, capacity=capacity, pending=tuple(pending), running=tuple(running),
                        usage=dict(usage), now=now.timestamp(), config=config)
        return Loaded(snap, rows, {v: k for k, v in names.items()})

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
