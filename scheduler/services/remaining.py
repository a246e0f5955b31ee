"""How long a job is expected to run once started: the finish-time ordering's work
estimate (the live loop's `PendingRequest.work_s`) and `squeue --start`'s run time
(services.estimates).

- a hold job: its `seconds`;
- any job with a wall-time limit: its `time_limit_s` (it cannot run longer);
- both: the least; neither: None. The finish-time ordering then counts
  ``UNKNOWN_WORK_S`` (``work_s``), so a job nobody bounded is neither favoured as
  instant nor starved as endless.

Invariants: pure functions of the job row (no database read, no clock); the same row
gives the same estimate in the loop, the estimates and the simulator's replay of the
history (which replays the time the job really ran instead: it knows it). Progress
rates (a running job's reported ETA) bound when a *running* job ends, in
services.estimates; they do not enter the admission order, which ranks pending jobs.
"""
from __future__ import annotations

from scheduler.store.jobrow import JobRow
from scheduler.vocab import HOLD

UNKNOWN_WORK_S = 3600.0


def hold_seconds(row: JobRow) -> float | None:
    if row.model != HOLD:
        return None
    seconds = row.spec.get("seconds")
    return float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None


def expected_runtime(row: JobRow) -> float | None:
    """How long a pending job is expected to run once started (s), or None if unknown."""
    bounds = [b for b in (hold_seconds(row), row.time_limit_s) if b is not None]
    return max(0.0, min(bounds)) if bounds else None


def work_s(row: JobRow) -> float:
    """The finish-time ordering's estimate of a job's run time (s): expected_runtime, or
    UNKNOWN_WORK_S."""
    runtime = expected_runtime(row)
    return UNKNOWN_WORK_S if runtime is None else runtime
