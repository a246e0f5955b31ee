"""The loop's watch on Ray's nodes and on the jobs Ray refused: capacity taken from Ray,
frameworks per node, and the backoff of jobs Ray would not place.

`NodeWatch` is a collaborator of scheduler.loop.coordinator.SchedulingLoop: it owns its
state (the nodes' frameworks, the refusals, when capacity was last looked at) and is
handed what it needs: the executor (`discover`, `tracked`), the loop's fenced write
transaction (`transaction`, for the node rows) and a monotonic clock for its backoffs.

Invariants:
- A node Ray does not have is never placed on: a node declared by hand while capacity
  comes from Ray is listed inactive with NOT_IN_RAY, one that left with LEFT_RAY, one
  fairgpu cannot take with the limit it breaks. A capacity change forgets the refusals.
- A job Ray refuses is queued again without spending a retry, held back 1, 2, 4 ... s,
  and after `max_refusals` waits with reason RAY_REFUSED until capacity changes; a
  refusal is counted once the transaction that queues the job again committed.
- Jobs whose framework no active node can import wait Infeasible (when every node's
  frameworks are known), and come back when a node can.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime

from sqlmodel import Session, select

import quota
from scheduler.services.capacity import set_node, slices_per_gpu_for
from scheduler.services.errors import DomainError
from scheduler.services.snapshot import Synced
from scheduler.store import JobState, Node, after_commit
from scheduler.text import first_line
from scheduler.vocab import RAY_REFUSED

log = logging.getLogger("fairgpu.loop")

NOT_IN_RAY = "not in Ray: declared by hand, but `fairgpu up` takes capacity from Ray"
LEFT_RAY = "left the Ray cluster"


class NodeWatch:
    """Capacity from Ray, and jobs Ray refused (see the module)."""

    def __init__(self, executor, transaction: Callable[[], AbstractContextManager[Session]], *,
                 slices_per_gpu: int | None = None, max_refusals: int = 5, discover: bool = True,
                 monotonic: Callable[[], float] = time.monotonic):
        self.executor = executor  # discover() -> [DiscoveredNode], tracked() -> {job id: attempt}
        self.transaction = transaction
        self.slices_per_gpu = slices_per_gpu  # None: by GPU type (slices_per_gpu_for)
        self.max_refusals = max_refusals
        self.discover = discover  # take capacity from Ray (else the nodes declared by hand)
        self.monotonic = monotonic
        self.capacity_period_s = 2.0  # look at Ray's nodes at most this often
        self._last_capacity = float("-inf")
        self._refused: dict[int, tuple[int, float, str]] = {}  # job id -> (refusals, retry at (monotonic), why)
        self._frameworks: dict[str, frozenset[str] | None] = {}  # discovered nodes' frameworks

    # -- capacity ---------------------------------------------------------------------
    def look_again(self) -> None:
        """A node may have gone (a worker or node was lost): look at Ray's nodes next time."""
        self._last_capacity = float("-inf")

    def refresh_if_due(self, now: datetime) -> None:
        """`refresh_capacity`, at most every capacity_period_s, when capacity comes from Ray."""
        if self.discover and self.monotonic() - self._last_capacity >= self.capacity_period_s:
            self._last_capacity = self.monotonic()
            self.refresh_capacity(now)

    def refresh_capacity(self, now: datetime) -> None:
        """Nodes as Ray has them. A node Ray does not have is never placed on: a node
        declared by hand is listed inactive with the reason, as is one that left, and one
        whose size fairgpu cannot take (the reason names the limit)."""
        found = self.executor.discover()
        with self.transaction() as s:
            rows = {n.name: n for n in s.exec(select(Node)).all()}
            changed = False
            for d in found:
                spg = self.slices_per_gpu or slices_per_gpu_for(d.gpu_type)
                row = rows.pop(d.name, None)
                frameworks = ",".join(d.frameworks) if d.frameworks is not None else None
                if (row is not None and row.active and row.source == "ray" and row.gpus == d.gpus
                        and row.slices_per_gpu == spg and row.ray_id == d.ray_id and row.frameworks == frameworks):
                    continue
                changed = True
                try:
                    row = set_node(s, node=d.name, gpus=d.gpus, slices_per_gpu=spg, gpu_type=d.gpu_type, at=now,
                                   source="ray", check_guarantees=False)
                    row.reason = None
                except (DomainError, quota.QuotaError) as exc:  # e.g. more GPUs than a node may have
                    row = row or Node(name=d.name, gpu_type=d.gpu_type, gpus=0, slices_per_gpu=1, source="ray")
                    row.active, row.reason, row.updated_at = False, f"not used: {exc}", now
                row.ray_id, row.frameworks = d.ray_id, frameworks
                s.add(row)
            for row in rows.values():
                reason = LEFT_RAY if row.source == "ray" else NOT_IN_RAY
                if row.active or row.reason != reason:
                    row.active, row.reason, row.updated_at = False, reason, now
                    s.add(row)
                    changed = True
        self._frameworks = {d.name: (frozenset(d.frameworks) if d.frameworks is not None else None)
                            for d in found}  # once the nodes' rows say so
        if changed:
            self.capacity_changed()

    def capacity_changed(self) -> None:
        """Jobs Ray refused may be placed now: their refusals go."""
        self._refused.clear()

    def can_run(self, node: str, framework: str | None) -> bool:
        """False only when `node`'s frameworks are known and `framework` is not among them."""
        can = self._frameworks.get(node)
        return framework is None or can is None or framework in can

    # -- jobs Ray refused -----------------------------------------------------------------
    def note_refusal(self, s, job_id: int, error: str | None) -> str:
        """Count a refusal and hold the job back: 1, 2, 4 ... s, then until capacity changes;
        counted once `s`, the transaction that queues the job again, commits."""
        n = self._refused.get(job_id, (0, 0.0, ""))[0] + 1
        first = first_line(error or "", "no reason given")[:200]
        if n >= self.max_refusals:
            why = f"Ray refused to place it {n} times ({first}); it waits until capacity changes"
            entry = (n, float("inf"), why)
        else:
            delay = min(60.0, 2.0 ** (n - 1))
            why = f"Ray refused to place it ({first}); trying again in {delay:g} s (refusal {n} of {self.max_refusals})"
            entry = (n, self.monotonic() + delay, why)
        after_commit(s, lambda: self._refused.__setitem__(job_id, entry))
        log.warning("job %s: %s", job_id, why)
        return why

    def forget_refusals(self, s, job_ids: Iterable[int]) -> None:
        """Jobs that ran and finished: their refusals go, once `s` commits."""
        def forget() -> None:
            for job_id in job_ids:
                self._refused.pop(job_id, None)
        if self._refused:
            after_commit(s, forget)

    def hold_back(self, loaded: Synced, by_framework: Mapping[str | None, Iterable[int]]) -> dict[int, tuple[str, str]]:
        """The jobs to keep out of the policy's state: those Ray refused (until their backoff
        ends) and those whose framework no node can import (Infeasible, until one can;
        `by_framework`: the pending jobs by framework, SnapshotLoader's), as {job id:
        (reason, message)}."""
        held: dict[int, tuple[str, str]] = {}
        missing, have = self._missing_frameworks(by_framework)
        for job_id, framework in missing.items():
            held[job_id] = (quota.INFEASIBLE, (f"no node can run {framework} (the nodes have: "
                                               f"{', '.join(sorted(have)) or 'no framework'})"))
        if self._refused:
            rows, pending = loaded.jobs, JobState.PENDING
            tracked = self.executor.tracked()
            for job_id in [j for j in self._refused
                           if (j not in rows or rows[j].state != pending) and j not in tracked]:
                del self._refused[job_id]  # finished, cancelled or running: forget it
            clock = self.monotonic()
            held.update((j, (RAY_REFUSED, why)) for j, (_n, until, why) in self._refused.items()
                        if until > clock and j in rows and rows[j].state == pending)
        return held

    def _missing_frameworks(self, by_framework) -> tuple[dict[int, str], set[str]]:
        """({pending job id: framework} for jobs whose framework no active node can import,
        the frameworks the nodes have); nothing when some node's frameworks are unknown."""
        known = self._frameworks
        if not known or any(fs is None for fs in known.values()):
            return {}, set()
        have = {f for fs in known.values() for f in fs}
        return {j: framework for framework, ids in by_framework.items()
                if framework is not None and framework not in have for j in ids}, have
