"""What a scheduling cycle did (`CycleReport`) and how the loop is faring (`Health`).

Invariants:
- The report's bookkeeping has one entry point, `CycleReport.count`: every charge and
  every end of an attempt the cycle saw goes through it, so the counters, the per-account
  events and the files to clear (`ended`) cannot disagree.
- `Health` is the loop's one record of failures: a cycle that raised (`failed`, counted
  in `failures_total` and backed off), a cycle that succeeded (`succeeded`), and a
  publishing error after the cycle's commits (`publish_failed`, counted apart; it rolls
  nothing back). Each distinct error is logged with its traceback once (a bounded set).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

import quota
from scheduler.text import first_line

log = logging.getLogger("fairgpu.loop")


@dataclass
class CycleReport:
    """What one cycle did, for metrics, the demo and tests."""

    at: datetime
    decision: quota.Decision | None = None
    snapshot: quota.Snapshot | None = None
    admitted: int = 0
    preempted: int = 0
    finished: int = 0  # attempts this loop ended in a final state
    requeued: int = 0
    duration_s: float = 0.0
    ray_start_delays: list[float] = field(default_factory=list)
    # per-account events, for the metrics (account ids, named by account_names)
    account_names: Mapping[int, str] = field(default_factory=dict)  # account id -> name, as loaded
    admissions: list[tuple[int, float]] = field(default_factory=list)  # (account_id, queue wait s)
    preemptions: list[tuple[int, str]] = field(default_factory=list)  # (account_id, quota.Preemption.kind)
    finishes: list[tuple[int, str]] = field(default_factory=list)  # (account_id, final state)
    usage: dict[int, float] = field(default_factory=dict)  # account_id -> slice-seconds charged
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent in each of PHASES
    ended: list[int] = field(default_factory=list)  # jobs that reached a final state (their files go)

    def count(self, job, *, charged: float = 0.0, state=None, by_loop: bool = True,
              ray_start_delay: float | None = None) -> None:
        """Book `charged` slice-seconds to the job's account, and its final `state` (a
        JobState) if it reached one: `by_loop` False for a job someone else ended (the API
        cancelled it), which the loop only saw go."""
        if charged > 0:
            self.usage[job.account_id] = self.usage.get(job.account_id, 0.0) + charged
        if state is None:
            return
        self.ended.append(job.id)
        self.finishes.append((job.account_id, state.value))
        if by_loop:
            self.finished += 1
        if ray_start_delay is not None:
            self.ray_start_delays.append(ray_start_delay)


@dataclass(frozen=True)
class LoopHealth:
    consecutive_failures: int = 0
    failures_total: int = 0
    last_error: str | None = None
    last_success_at: datetime | None = None
    failing_since: datetime | None = None
    publish_failures_total: int = 0  # cycles whose publishing (on_cycle) raised, after their commits
    last_publish_error: str | None = None


class Health:
    """The loop's failures, as `LoopHealth` (see the module)."""

    def __init__(self):
        self.now = LoopHealth()
        self._logged: dict[str, int] = {}  # distinct errors logged with their traceback (bounded)

    def succeeded(self, at: datetime) -> None:
        if self.now.consecutive_failures:
            log.warning("scheduling cycles succeed again after %d failed", self.now.consecutive_failures)
        self.now = replace(self.now, consecutive_failures=0, last_success_at=at, failing_since=None)

    def failed(self, exc: Exception, at: datetime) -> None:
        key = self._log_once(exc, "scheduling cycle failed (retried with backoff; this error is logged once)")
        h = self.now
        self.now = replace(h, consecutive_failures=h.consecutive_failures + 1, failures_total=h.failures_total + 1,
                           last_error=key, failing_since=h.failing_since or at)

    def publish_failed(self, exc: Exception) -> None:
        key = self._log_once(exc, "publishing a scheduling cycle failed (its work is committed; "
                                  "this error is logged once)")
        self.now = replace(self.now, publish_failures_total=self.now.publish_failures_total + 1,
                           last_publish_error=key)

    def backoff(self, low: float, high: float) -> float:
        """Seconds to wait before retrying: `low` after one failure, doubling up to `high`."""
        return min(high, low * 2 ** max(0, self.now.consecutive_failures - 1))

    def _log_once(self, exc: Exception, what: str) -> str:
        """Log `exc` with its traceback the first time it is seen (a bounded set); its key."""
        key = f"{type(exc).__name__}: {first_line(exc)[:300]}"
        if key not in self._logged and len(self._logged) < 100:
            self._logged[key] = 1
            log.exception(what)
        else:
            log.debug("%s again: %s", what.split(" (")[0], key)
        return key
