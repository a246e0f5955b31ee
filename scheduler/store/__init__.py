"""fairgpu's persistent state: engines, tables, the job status machine, tokens.

Layering: this package knows nothing of ``quota/`` policy; services load a
snapshot from here, ask ``quota.decide``, and apply the result through
``transitions`` in short transactions (no network call inside one).
"""
from scheduler.store.engine import (
    StoreError,
    after_commit,
    alembic_config,
    default_db_url,
    init_db,
    make_engine,
    redact_url,
    session_scope,
)
from scheduler.store.models import (
    Account,
    ApiToken,
    Job,
    JobEvent,
    JobGate,
    JobState,
    LeaderLease,
    Node,
    Setting,
    UsageRecord,
    UTCDateTime,
    WaitReason,
    metadata,
    utcnow,
)
from scheduler.store.tokens import display_prefix, hash_token, new_token, verify
from scheduler.store.transitions import (
    ALLOWED,
    EVENT_KINDS,
    InvalidTransition,
    StaleJob,
    add_event,
    submit_jobs,
    transition,
)

__all__ = [
    "ALLOWED", "EVENT_KINDS", "Account", "ApiToken", "InvalidTransition", "Job", "JobEvent", "JobGate",
    "JobState", "LeaderLease", "Node", "Setting", "StaleJob", "StoreError", "UTCDateTime", "UsageRecord", "WaitReason",
    "add_event", "after_commit", "alembic_config", "default_db_url", "display_prefix", "hash_token",
    "init_db", "make_engine", "metadata", "new_token", "redact_url",
    "session_scope", "submit_jobs", "transition", "utcnow", "verify",
]
