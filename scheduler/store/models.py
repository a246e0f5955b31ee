"""SQLModel tables for fairgpu's persistent state.

Invariants:
- Every timestamp is a timezone-aware UTC ``datetime`` going in and coming out,
  on SQLite (stored as naive UTC text) and PostgreSQL (``timestamptz``) alike;
  a naive datetime is refused at bind time rather than guessed at.
- A job's ``state`` changes only through ``scheduler.store.transitions``;
  ``version`` is its optimistic lock and grows by one on every transition.
- JSON columns (``Job.spec``, ``Job.gpu_slices``, ``Job.result``) are not
  mutation-tracked: assign a new value, never edit one in place.
- The schema itself is owned by the Alembic migrations; a test checks that
  head and these models do not differ.
- ``utcnow`` is the one wall clock (aware UTC). It lives here, on the lowest floor,
  so every layer can reach it without importing upward; code that takes a clock is
  handed ``utcnow`` by its caller (the server, the CLI), and nothing else calls
  ``datetime.now`` (tests/test_clock.py).
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from scheduler.vocab import JobState

# Deterministic constraint names, so later (batch) migrations can address them.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = SQLModel.metadata


def utcnow() -> datetime:
    """Now, as an aware UTC datetime: the wall clock every stored time is read from."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend; naive values are an error."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JobState is scheduler.vocab's (one owner, read by every layer). Stored as VARCHAR (no
# PostgreSQL ENUM type to migrate when a state is added).
JOB_STATE_TYPE = sa.Enum(JobState, name="jobstate", native_enum=False, length=16, validate_strings=True)


class Account(SQLModel, table=True):
    """A node of the account tree: an institution, department, project or user."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    parent_id: int | None = Field(default=None, foreign_key="account.id", index=True)
    weight: float = 1.0
    guaranteed_slices: int = 0
    max_slices: int | None = None
    max_pending: int | None = None
    # None: inherited from the parent (the root's default is no limit / no scripts)
    default_time_s: float | None = None  # wall-time limit of a job submitted without --time
    max_time_s: float | None = None  # the longest --time a job may ask for
    allow_scripts: bool | None = None  # may run its own code (fairgpu submit script)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Node(SQLModel, table=True):
    """A machine's GPUs, declared by an admin or discovered from Ray."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    gpu_type: str
    gpus: int
    slices_per_gpu: int
    active: bool = True
    source: str = "declared"  # "declared" | "ray"
    reason: str | None = None  # why an inactive node is not used (e.g. Ray does not have it)
    ray_id: str | None = None  # Ray's node id, for a node discovered from Ray (its name is the host's)
    frameworks: str | None = None  # comma-separated frameworks its workers can import; None: not probed
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Job(SQLModel, table=True):
    """A request for GPU slices, and its life from submission to finish."""

    __table_args__ = (sa.Index("ix_job_state_account_id", "state", "account_id"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    model: str
    framework: str | None = None
    mode: str = "train"
    slices: int
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    # Indexed through ix_job_state_account_id (state is its leading column).
    state: JobState = Field(default=JobState.PENDING, sa_type=JOB_STATE_TYPE)
    reason: str | None = None
    reason_message: str | None = None
    queue_seq: float = 0.0
    submitted_at: datetime = Field(sa_type=UTCDateTime)
    admitted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    node: str | None = None
    gpu: int | None = None
    gpu_slices: list[list[int]] = Field(default_factory=list, sa_type=sa.JSON)
    attempts: int = 0
    failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # attempts lost to the job's own fault (task error, worker or node death): these spend retries
    preemptions: int = 0
    # unclean scheduler stops in a row at which its task ran (scheduler.loop.recovery: at 2 it is
    # not started again); any other end of an attempt sets it back to 0 (store.transitions)
    unclean_stops: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    result: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True))
    error: str | None = None
    time_limit_s: float | None = None  # wall-time limit of each attempt's task (None: none)
    progress: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True))
    ray_task_id: str | None = None
    version: int = 0
    array_id: int | None = Field(default=None, index=True)  # a job array's first id, on each of its jobs (count > 1)


class JobGate(SQLModel, table=True):
    """What keeps a pending job from the policy besides the policy itself: a user's hold
    (`fairgpu hold`) and the jobs it starts after (`submit --after`). A row only for a job
    that has either; services.gates owns the rule and the loader applies it. Every change
    to a row appends a JobEvent in the same transaction (the loader's change cursor)."""

    __tablename__ = "job_gate"

    job_id: int = Field(foreign_key="job.id", primary_key=True, ondelete="CASCADE")
    held: bool = False
    after: list[int] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True))  # job ids, SUCCEEDED first


class JobEvent(SQLModel, table=True):
    __tablename__ = "job_event"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True, ondelete="CASCADE")
    at: datetime = Field(sa_type=UTCDateTime)
    kind: str  # submitted/admitted/started/preempted/requeued/finished/failed/cancelled
    message: str | None = None


class UsageRecord(SQLModel, table=True):
    """Slice-seconds charged to a leaf account (deleted with the account)."""

    __tablename__ = "usage_record"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True, ondelete="CASCADE")
    job_id: int | None = Field(default=None, foreign_key="job.id", ondelete="SET NULL")
    slice_seconds: float
    at: datetime = Field(sa_type=UTCDateTime, index=True)


class ApiToken(SQLModel, table=True):
    """An API token, stored only as its SHA-256 hash; ``account_id`` NULL = admin."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int | None = Field(default=None, foreign_key="account.id", ondelete="CASCADE")
    name: str
    token_hash: str = Field(unique=True)
    prefix: str
    scope: str = Field(default="full", sa_column_kwargs={"server_default": "full"})  # "full": the API as its account (or admin); "scrape": only /metrics
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Setting(SQLModel, table=True):
    """A key/value setting: half-life, fair-share algorithm, preemption on/off..."""

    key: str = Field(primary_key=True)
    value: str


class LeaderLease(SQLModel, table=True):
    """The one row that says which server runs the scheduling loop on this database.

    A server holds the lease while ``expires_at`` is in the future and renews it by
    heartbeat; another takes it over only after it lapsed, by bumping ``epoch``. Every
    write the loop makes checks ``epoch`` in the same transaction (scheduler.store.lease).
    """

    __tablename__ = "leader_lease"

    id: int = Field(default=1, primary_key=True)
    holder: str  # "host:pid"
    host: str
    pid: int
    epoch: int = 0
    acquired_at: datetime = Field(sa_type=UTCDateTime)
    renewed_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class WaitReason(SQLModel, table=True):
    """Why the pending jobs of one (leaf account, size) wait, as the loop's last cycle
    explained them (the policy explains per group: quota.policy.Explained). A pending job
    whose own `reason` is NULL shows its group's (services.jobs.public); a job's own
    reason (held back, Infeasible, RayRefused) comes first. The loop writes only the
    groups whose reason changed, so a cycle's reason writes follow the groups that
    changed, never the number of waiting jobs. Deleted with the account."""

    __tablename__ = "wait_reason"

    account_id: int = Field(foreign_key="account.id", primary_key=True, ondelete="CASCADE")
    slices: int = Field(primary_key=True)
    reason: str
    message: str
    at: datetime = Field(sa_type=UTCDateTime)
