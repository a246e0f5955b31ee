"""Where does a pending job stand, and when might it start? (Slurm's ``squeue --start``.)

``estimated_starts(session, now, accounts)`` loads a fresh snapshot and replays the live
policy forward (``quota.estimate_starts``) with:

- a running job's expected end: the least of the bounds that are known, from its task's
  start (``started_at``): start + its time limit; its latest progress's ETA (the progress
  file's ``updated_at`` + ``eta_s``, if that progress is of the current attempt); for a
  hold job, start + its seconds. Never before ``now``; with no bound it holds its slices
  past the horizon (no start estimate for the jobs that wait on them);
- a pending job's expected run time: a hold job's seconds, else its time limit (the
  least of the two when both are known), else unknown.

Invariants:
- The replay uses the whole queue, every account's: positions are global, in the order
  the policy would admit (1 = next). Only the pending jobs of ``accounts`` (None: all, the
  admin) are returned, so a caller learns where its own jobs stand, not whose are ahead.
- ``EstimateCache`` keeps one replay of the whole queue for ``ttl_s`` seconds of the
  injected clock (memory: one entry, the size of the queue); a replay that lacks a job
  the caller asks about (submitted or requeued since) is done again.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping

import sqlalchemy as sa
from sqlmodel import Session

from quota.estimate import Estimate, estimate_starts
from scheduler.services.remaining import expected_runtime, hold_seconds
from scheduler.services.snapshot import load_snapshot
from scheduler.store import Job, JobState
from scheduler.store.jobrow import JobRow, json_value

CACHE_TTL_S = 2.0

_J = Job.__table__.c
_RUNNING_PROGRESS = sa.select(_J.id, sa.type_coerce(_J.progress, sa.Text)).where(
    _J.state == JobState.RUNNING, _J.progress.is_not(None))


@dataclass(frozen=True)
class QueueEstimates:
    """One replay of the whole queue: every pending job's estimate and account."""

    at: datetime
    estimates: dict[int, Estimate]
    accounts: dict[int, str]  # pending job id -> account name

    def visible(self, accounts: frozenset[str] | set[str] | None) -> dict[int, Estimate]:
        if accounts is None:
            return dict(self.estimates)
        return {j: e for j, e in self.estimates.items() if self.accounts.get(j) in accounts}


def _progress_of(value) -> dict | None:
    try:
        value = json_value(value, None)  # text on SQLite, decoded by psycopg
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def expected_end(row: JobRow, progress: Mapping | None, now: float) -> float | None:
    """When a running job is expected to end (epoch s), or None if nothing bounds it."""
    start = (row.started_at or row.submitted_at).timestamp()
    bounds = []
    if row.time_limit_s is not None:
        bounds.append(start + row.time_limit_s)
    held = hold_seconds(row)
    if held is not None:
        bounds.append(start + held)
    if progress is not None:
        eta, updated = progress.get("eta_s"), progress.get("updated_at")
        if isinstance(eta, (int, float)) and isinstance(updated, (int, float)) and updated >= start:
            bounds.append(updated + max(0.0, eta))
    return max(now, min(bounds)) if bounds else None


def replay(session: Session, now: datetime) -> QueueEstimates:
    """Every pending job's estimate, from a fresh load of the whole queue."""
    loaded = load_snapshot(session, now)
    clock = now.timestamp()
    progress = {i: _progress_of(p) for i, p in session.connection().execute(_RUNNING_PROGRESS)}
    ends, runtimes = {}, {}
    for job_id, row in loaded.jobs.items():
        if row.state == JobState.RUNNING:
            end = expected_end(row, progress.get(job_id), clock)
            if end is not None:
                ends[job_id] = end
        else:
            runtime = expected_runtime(row)
            if runtime is not None:
                runtimes[job_id] = runtime
    estimates = estimate_starts(loaded.snapshot, ends, runtimes) if loaded.snapshot.pending else {}
    accounts = {r.id: r.account for r in loaded.snapshot.pending}
    return QueueEstimates(now, estimates, accounts)


def estimated_starts(session: Session, now: datetime,
                     accounts: frozenset[str] | set[str] | None = None) -> dict[int, Estimate]:
    """{pending job id: Estimate(position, start)} of the jobs of ``accounts`` (None: all)."""
    return replay(session, now).visible(accounts)


def start_time(estimate: Estimate | None) -> datetime | None:
    """The estimate's start as an aware UTC datetime (None: past the horizon, or unknown)."""
    if estimate is None or estimate.start is None:
        return None
    return datetime.fromtimestamp(estimate.start, timezone.utc)


class EstimateCache:
    """One replay of the whole queue, reused for ``ttl_s`` seconds (see the module invariants)."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, compute=None) -> None:
        self.ttl_s = ttl_s
        self._compute = compute or replay  # (session, now) -> QueueEstimates
        self._kept: QueueEstimates | None = None

    def get(self, session: Session, now: datetime, accounts: frozenset[str] | set[str] | None,
            wanted: Iterable[int] = ()) -> dict[int, Estimate]:
        """The estimates of ``accounts``' pending jobs; ``wanted``: ids the caller will look
        up (pending jobs it is about to show), replayed anew if the kept replay lacks one."""
        kept = self._kept
        age = (now - kept.at).total_seconds() if kept is not None else None
        if age is None or not 0 <= age < self.ttl_s or any(j not in kept.estimates for j in wanted):
            kept = self._kept = self._compute(session, now)
        return kept.visible(accounts)
