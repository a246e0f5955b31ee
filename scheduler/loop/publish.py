"""Publish each cycle for /metrics: counters move with the cycle's events, and the
cycle's snapshot and decision become the ClusterView the scrape-time collector reads
(built from them on the first read after the cycle, not by the cycle).

Invariants: no per-job labels; every per-account figure is `quota.report`'s (the figures
`fairgpu share` reads, so the two never disagree) and the equity measures are
`quota.cluster_equity`'s, over institutions (top-level accounts) with demand; accounts
are named from the cycle's report (`CycleReport.account_names`): publishing and reading
the view never touch the database (workload results and NVML readings are refreshed at
most every `refresh_s` seconds, off the scrape path).
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable

from sqlmodel import select

import quota
from scheduler.metrics.exporter import SchedulerMetrics
from scheduler.metrics.view import AccountView, ClusterView, GpuView, WorkloadView
from scheduler.store import Job, JobState, session_scope
from scheduler.vocab import HOLD

log = logging.getLogger("fairgpu.publish")


def account_views(figures: tuple[quota.AccountFigures, ...]) -> tuple[AccountView, ...]:
    """The exporter's per-account view of `quota.report`'s figures, the decision applied."""
    return tuple(AccountView(
        name=f.name, parent=f.parent, weight=f.weight, guaranteed_slices=f.guaranteed_slices,
        max_slices=f.max_slices, entitled_slices=f.entitled_slices, allocated_slices=f.allocated_slices,
        running_jobs=f.allocated_jobs, pending_by_reason=dict(f.waiting), decayed_usage=f.raw_usage,
        fairshare_factor=f.fairshare_factor,
    ) for f in figures)


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

    def start(self) -> Publisher:
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

    def _refresh(self) -> None:
        with session_scope(self.engine) as s:
            rows = s.exec(select(Job.model, Job.framework, Job.result).where(
                Job.state == JobState.SUCCEEDED, Job.model != HOLD)).all()
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
        names = report.account_names

        def name(account_id: int) -> str:
            return names.get(account_id, str(account_id))

        for account_id, wait in report.admissions:
            m.admitted(name(account_id), wait)
        for account_id, kind in report.preemptions:
            m.preempted(name(account_id), kind)
        for account_id, state in report.finishes:
            m.job_finished(name(account_id), state)
        for account_id, amount in report.usage.items():
            m.add_usage(name(account_id), amount)
        if report.snapshot is not None and report.decision is not None:
            if report.snapshot.tree is not self._tree:  # every account's series exist from the start
                for account in report.snapshot.tree.order:
                    m.ensure_account(account)
                self._tree = report.snapshot.tree
            self._latest = report

    def _build_view(self, report) -> ClusterView:
        snap, decision = report.snapshot, report.decision
        figures = quota.report(snap, decision)
        jain, dev, gini = quota.cluster_equity(figures)
        gpus, nvml_nodes = self._gpus
        return ClusterView(
            at=report.at.timestamp(), capacity_slices=snap.capacity.total_slices,
            free_slices=decision.free_slices(snap), jain_index=jain,
            max_share_deviation=dev, usage_gini=gini, ray_pending_tasks=self._ray_pending,
            accounts=account_views(figures), gpus=tuple(gpus), nvml_nodes=dict(nvml_nodes),
            workloads=self._workloads,
        )


__all__ = ["GpuView", "Publisher", "account_views"]
