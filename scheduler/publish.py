"""Publish each cycle for /metrics: counters move with the cycle's events, and the
cycle's snapshot and decision become the ClusterView the scrape-time collector reads
(built from them on the first read after the cycle, not by the cycle).

Invariants: no per-job labels; cluster equity measures are over institutions (top-level
accounts) with demand; reading the view never touches the database (workload results
and NVML readings are refreshed at most every `refresh_s` seconds, off the scrape path).
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Callable

from sqlmodel import select

import quota
from scheduler.metrics.exporter import SchedulerMetrics
from scheduler.metrics.view import AccountView, ClusterView, GpuView, WorkloadView
from scheduler.store import Account, Job, JobState, session_scope

log = logging.getLogger("fairgpu.publish")


def equity(snapshot: quota.Snapshot, decision: quota.Decision, factors=None) -> tuple[float, float, float]:
    """(Jain's index, largest |share deviation|, usage Gini) over institutions."""
    tree = snapshot.tree
    top = tree.kids(None)
    capacity = snapshot.capacity.total_slices
    entitled = {a: decision.entitled.get(a, 0.0) for a in top if decision.entitled.get(a, 0.0) > 0}
    actual = {a: float(decision.allocated.get(a, 0)) for a in top}
    jain = quota.jain_of_shares(actual, entitled)
    dev = quota.share_deviation(actual, entitled, capacity)
    if factors is None:
        factors = quota.fair_share(tree, snapshot.usage, snapshot.config.algorithm)
    gini = quota.usage_gini({a: factors.norm_usage[a] for a in top}, {a: factors.norm_shares[a] for a in top})
    return jain, max((abs(v) for v in dev.values()), default=0.0), gini


class Publisher:
    def __init__(self, engine, metrics: SchedulerMetrics, *, gpu_source: Callable[[], tuple] | None = None,
                 pending_source: Callable[[], int] | None = None, refresh_s: float = 5.0):
        self.engine = engine
        self.metrics = metrics
        self.gpu_source = gpu_source  # () -> (gpu views, nvml nodes)
        self.pending_source = pending_source  # () -> tasks Ray was handed but has not started
        self._ray_pending = 0
        self.refresh_s = refresh_s
        self._view: ClusterView | None = None
        self._latest = None  # the report of the last cycle that decided (its snapshot and decision)
        self._view_of = None  # the report self._view was built from
        self._tree = None
        self._names: dict[int, str] = {}
        self._workloads: tuple[WorkloadView, ...] = ()
        self._gpus: tuple = ((), {})
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def view(self) -> ClusterView | None:
        """The picture as of the last cycle that loaded a snapshot, built on first read
        after it (a scrape, the demo's table): cycles only keep their inputs, so a busy
        loop does not rebuild per-account views nobody reads between two scrapes."""
        latest = self._latest
        if latest is not None and (self._view is None or self._view_of is not latest):
            self._view, self._view_of = self._build_view(latest), latest
        return self._view

    def start(self) -> "Publisher":
        """Refresh workload results, NVML readings and Ray's pending count in a background
        thread, so a slow sampler never holds up a scheduling cycle."""
        def run() -> None:
            while not self._stop.is_set():
                try:
                    self._refresh()
                except Exception:
                    log.exception("refreshing workload results and GPU readings failed")
                self._stop.wait(self.refresh_s)

        self._refresher = threading.Thread(target=run, name="fairgpu-publish", daemon=True)
        self._refresher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=10)

    def _name(self, account_id: int) -> str:
        if account_id not in self._names:
            with session_scope(self.engine) as s:
                self._names = {a.id: a.name for a in s.exec(select(Account)).all()}
        return self._names.get(account_id, str(account_id))

    def _refresh(self) -> None:
        with session_scope(self.engine) as s:
            rows = s.exec(select(Job.model, Job.framework, Job.result).where(
                Job.state == JobState.SUCCEEDED, Job.model != "hold")).all()
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for model, framework, result in rows:
            if result:
                groups[(model, framework or "", result.get("device", "cpu"))].append(result)
        self._workloads = tuple(
            WorkloadView(m, f, d, len(rs),
                         sum(r.get("samples_per_second") or 0.0 for r in rs) / len(rs),
                         max(int(r.get("peak_memory_bytes") or 0) for r in rs))
            for (m, f, d), rs in sorted(groups.items())
        )
        if self.gpu_source is not None:
            try:
                self._gpus = self.gpu_source()
            except Exception:
                log.exception("NVML sampling failed")
        if self.pending_source is not None:
            try:
                self._ray_pending = self.pending_source()
            except Exception:
                log.exception("asking Ray which tasks started failed")

    def publish(self, report) -> None:
        m = self.metrics
        m.observe_cycle(report.duration_s, report.phases)
        for account_id, wait in report.admissions:
            m.admitted(self._name(account_id), wait)
        for account_id, reason in report.preemptions:
            m.preempted(self._name(account_id), reason)
        for account_id, state in report.finishes:
            m.job_finished(self._name(account_id), state)
        for account_id, amount in report.usage.items():
            m.add_usage(self._name(account_id), amount)
        if report.snapshot is not None and report.decision is not None:
            if report.snapshot.tree is not self._tree:  # every account's series exist from the start
                for name in report.snapshot.tree.order:
                    m.ensure_account(name)
                self._tree = report.snapshot.tree
            self._latest = report

    def _build_view(self, report) -> ClusterView:
        snap, decision = report.snapshot, report.decision
        tree = snap.tree
        running = defaultdict(int)
        for job in snap.running:
            for a in tree.ancestors(job.account) if job.account in tree else ():
                running[a] += 1
        for a in decision.admissions:
            for name in tree.ancestors(a.account):
                running[name] += 1
        for p in decision.preemptions:
            acct = next((j.account for j in snap.running if j.id == p.job_id), None)
            for name in tree.ancestors(acct) if acct in tree else ():
                running[name] -= 1
        pending = defaultdict(lambda: defaultdict(int))
        for w in decision.waiting.values():
            for name in tree.ancestors(w.account) if w.account in tree else ():
                pending[name][w.reason] += 1
        usage = quota.fair_share(tree, snap.usage, snap.config.algorithm)
        accounts = []
        for name in tree.order:
            spec = tree.accounts[name]
            accounts.append(AccountView(
                name=name, parent=spec.parent, weight=spec.weight, guaranteed_slices=spec.guaranteed,
                max_slices=spec.cap, entitled_slices=decision.entitled.get(name, 0.0),
                allocated_slices=decision.allocated.get(name, 0), running_jobs=running[name],
                pending_by_reason=dict(pending[name]), decayed_usage=usage.raw_usage[name],
                fairshare_factor=decision.factor.get(name, 1.0),
            ))
        jain, dev, gini = equity(snap, decision, usage)
        gpus, nvml_nodes = self._gpus
        return ClusterView(
            at=report.at.timestamp(), capacity_slices=snap.capacity.total_slices,
            free_slices=decision.free_slices(snap), jain_index=jain,
            max_share_deviation=dev, usage_gini=gini, ray_pending_tasks=self._ray_pending, accounts=tuple(accounts),
            gpus=tuple(gpus), nvml_nodes=dict(nvml_nodes), workloads=self._workloads,
        )


__all__ = ["Publisher", "equity", "GpuView"]
