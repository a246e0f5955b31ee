"""The /metrics exposition: one registry, a scrape-time collector and the loop's own metrics.

Invariants:
- Everything goes through the CollectorRegistry that `build_registry` returns; the
  global REGISTRY is never used and there is no multiprocess mode (custom collectors
  cannot run there), so fairgpu exports from the one server process.
- Gauges are computed at scrape time by FairgpuCollector from the latest ClusterView;
  counters and histograms live in SchedulerMetrics and only the loop moves them.
- Names: `fairgpu_` prefix, base units, `_total` on counters, 0-1 ratios end `_ratio`.
- No per-job labels. Label values come from bounded sets (accounts, GPUs, nodes,
  workload kinds, PENDING_REASONS, PREEMPTION_REASONS, FINISHED_STATUSES, CYCLE_PHASES),
  each derived from its one owner, never copied: the policy's pending reasons and
  preemption kinds (quota.REASONS, quota.PREEMPTION_KINDS), the final job states and the
  cycle's phases (scheduler.vocab). A preemption is labelled by its kind
  (quota.Preemption.kind), never by parsing its message. A kind or status outside its set
  raises (tests/metrics/test_label_sets.py walks every value through these calls).
- Every series with an `account` label is named `fairgpu_account_*`; `render(...,
  per_account=False)` leaves them all out (what /metrics serves without an admin or
  scrape token, see scheduler.api.metrics).
- The loop's health (failures, publishing failures, last success) is read at scrape time
  from the loop's `health()`; its series exist from the start (0 failures).
- Per-GPU series carry DCGM exporter's labels `gpu`, `UUID`, `hostname`, and
  `model_name` for DCGM's `modelName` (promtool rejects camelCase label names; the
  shipped Prometheus configs copy it back to `modelName`, see docs/metrics.md).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from quota.snapshot import PREEMPTION_KINDS
from scheduler.metrics.view import PENDING_REASONS, ClusterView
from scheduler.vocab import FINAL_STATES, PHASES

log = logging.getLogger("fairgpu.metrics")
ACCOUNT_PREFIX = "fairgpu_account_"  # every per-account family, and only those
GPU_LABELS = ("gpu", "UUID", "model_name", "hostname")
PREEMPTION_REASONS = PREEMPTION_KINDS
FINISHED_STATUSES = tuple(state.value.lower() for state in FINAL_STATES)
CYCLE_PHASES = PHASES
CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUEUE_WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class FairgpuCollector(Collector):
    """Gauges from the latest ClusterView; yields nothing before the first cycle."""

    def __init__(self, view_provider: Callable[[], ClusterView | None]) -> None:
        self._view = view_provider

    def describe(self) -> Iterable:
        return _families(None)

    def collect(self) -> Iterable:
        view = self._view()
        return _families(view) if view is not None else []


def _gauge(name: str, doc: str, labels=()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _families(v: ClusterView | None) -> list:
    fams = []

    def cluster(name, doc, value_of):
        g = _gauge(name, doc)
        if v is not None:
            g.add_metric([], float(value_of(v)))
        fams.append(g)

    cluster("fairgpu_capacity_slices", "GPU slices the cluster has.", lambda v: v.capacity_slices)
    cluster("fairgpu_free_slices", "GPU slices not allocated to any job.", lambda v: v.free_slices)
    cluster("fairgpu_slice_utilisation_ratio", "Allocated slices / capacity (0-1).", lambda v: v.slice_utilisation_ratio)
    cluster("fairgpu_jain_index_ratio", "Jain's index of actual/entitled share over accounts with demand.",
            lambda v: v.jain_index)
    cluster("fairgpu_max_share_deviation_ratio", "Largest |actual - entitled| share, fraction of capacity.",
            lambda v: v.max_share_deviation)
    cluster("fairgpu_usage_gini_ratio", "Gini coefficient of normalised usage per normalised share.",
            lambda v: v.usage_gini)
    cluster("fairgpu_ray_pending_tasks", "fairgpu tasks Ray holds unstarted (expected 0).",
            lambda v: v.ray_pending_tasks)
    cluster("fairgpu_last_cycle_timestamp_seconds", "When the latest scheduling cycle ended (epoch s).",
            lambda v: v.at)

    accounts = v.accounts if v is not None else ()
    per_account = [
        ("fairgpu_account_weight", "Fair-share weight (raw shares).", lambda a: a.weight),
        ("fairgpu_account_guaranteed_slices", "Slices guaranteed to the account.", lambda a: a.guaranteed_slices),
        ("fairgpu_account_max_slices", "Cap on the account's slices (absent when uncapped).", lambda a: a.max_slices),
        ("fairgpu_account_entitled_slices", "Slices the account is entitled to now (water-filled).",
         lambda a: a.entitled_slices),
        ("fairgpu_account_allocated_slices", "Slices the account's running jobs hold.", lambda a: a.allocated_slices),
        ("fairgpu_account_running_jobs", "Running jobs of the account.", lambda a: a.running_jobs),
        ("fairgpu_account_decayed_usage_slice_seconds", "Usage decayed with the policy's half-life.",
         lambda a: a.decayed_usage),
        ("fairgpu_account_fairshare_ratio", "Fair-share factor F (0-1; 1 means underserved).",
         lambda a: a.fairshare_factor),
    ]
    for name, doc, value_of in per_account:
        g = _gauge(name, doc, ["account"])
        for a in accounts:
            value = value_of(a)
            if value is not None:
                g.add_metric([a.name], float(value))
        fams.append(g)
    info = _gauge("fairgpu_account_info", "Always 1; links an account to its parent.", ["account", "parent"])
    pending = _gauge("fairgpu_account_pending_jobs", "Pending jobs by reason.", ["account", "reason"])
    for a in accounts:
        info.add_metric([a.name, a.parent or ""], 1.0)
        for reason in PENDING_REASONS:
            pending.add_metric([a.name, reason], float(a.pending_by_reason.get(reason, 0)))
    fams += [info, pending]

    gpus = v.gpus if v is not None else ()
    per_gpu = [
        ("fairgpu_gpu_utilisation_ratio", "GPU busy time over NVML's last sample period (0-1).",
         lambda g: g.utilisation_ratio),
        ("fairgpu_gpu_memory_used_bytes", "GPU memory in use.", lambda g: g.memory_used_bytes),
        ("fairgpu_gpu_memory_total_bytes", "GPU memory installed.", lambda g: g.memory_total_bytes),
        ("fairgpu_gpu_power_watts", "GPU power draw.", lambda g: g.power_watts),
    ]
    for name, doc, value_of in per_gpu:
        fam = _gauge(name, doc, GPU_LABELS)
        for g in gpus:
            value = value_of(g)
            if value is not None:  # unsupported on this GPU: absent, not 0
                fam.add_metric([str(g.index), g.uuid, g.model_name, g.hostname], float(value))
        fams.append(fam)
    nodes = _gauge("fairgpu_node_nvml_available", "1 if the node's GPU figures come from NVML, 0 if it has none.",
                   ["hostname"])
    for host, ok in sorted((v.nvml_nodes if v is not None else {}).items()):
        nodes.add_metric([host], 1.0 if ok else 0.0)
    fams.append(nodes)

    wl_labels = ["model", "framework", "device"]
    runs = CounterMetricFamily("fairgpu_workload_runs", "Finished workload runs.", labels=wl_labels)
    tput = _gauge("fairgpu_workload_throughput_samples_per_second", "Mean training/inference throughput.",
                  wl_labels)
    peak = _gauge("fairgpu_workload_peak_memory_bytes", "Largest peak GPU memory of a run.", wl_labels)
    for w in (v.workloads if v is not None else ()):
        key = [w.model, w.framework, w.device]
        runs.add_metric(key, float(w.runs))
        tput.add_metric(key, float(w.samples_per_second_mean))
        peak.add_metric(key, float(w.peak_memory_bytes_max))
    fams += [runs, tput, peak]
    return fams


class LoopHealthLike(Protocol):
    """What ``SchedulingLoop.health()`` returns (``loop.LoopHealth``), as /metrics and the
    API's /healthz read it: duck-typed, so neither imports the loop."""

    consecutive_failures: int
    failures_total: int
    publish_failures_total: int
    last_error: str | None
    last_success_at: datetime | None
    failing_since: datetime | None


class LoopHealthCollector(Collector):
    """The loop's failures, read at scrape time from ``health()`` (zeros without a loop)."""

    def __init__(self, health: Callable[[], LoopHealthLike] | None = None) -> None:
        self._health = health

    def describe(self) -> Iterable:
        return self._families(None)

    def collect(self) -> Iterable:
        h = None
        if self._health is not None:
            try:
                h = self._health()
            except Exception:  # a scrape must not fail because of it
                log.exception("reading the loop's health failed")
        return self._families(h)

    @staticmethod
    def _families(h: LoopHealthLike | None) -> list:
        failures = CounterMetricFamily(
            "fairgpu_schedule_cycle_failures", "Scheduling cycles that raised (retried with backoff).",
            value=float(h.failures_total) if h is not None else 0.0)
        publish = CounterMetricFamily(
            "fairgpu_schedule_cycle_publish_failures",
            "Cycles whose publishing raised after their commits (counted apart; nothing rolled back).",
            value=float(h.publish_failures_total) if h is not None else 0.0)
        in_a_row = GaugeMetricFamily(
            "fairgpu_schedule_consecutive_failures", "Scheduling cycles failed in a row (0 after a success).",
            value=float(h.consecutive_failures) if h is not None else 0.0)
        last = _gauge("fairgpu_schedule_last_success_timestamp_seconds",
                      "When a scheduling cycle last succeeded (epoch s); absent before the first.")
        if h is not None and h.last_success_at is not None:
            last.add_metric([], h.last_success_at.timestamp())
        return [failures, publish, in_a_row, last]


class SchedulerMetrics:
    """What the scheduling loop moves. Every method is cheap and thread-safe."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.cycle_duration = Histogram(
            "fairgpu_schedule_cycle_duration_seconds", "Duration of one load-decide-apply cycle.",
            buckets=CYCLE_BUCKETS, registry=registry)
        self.cycle_phase = Counter(
            "fairgpu_schedule_cycle_phase_seconds", "Time scheduling cycles spent in each phase.",
            ["phase"], registry=registry)
        for phase in CYCLE_PHASES:
            self.cycle_phase.labels(phase)
        self.admissions = Counter("fairgpu_account_admissions", "Jobs admitted (started on Ray).",
                                  ["account"], registry=registry)
        self.preemptions = Counter("fairgpu_account_preemptions", "Jobs of the account preempted, by reason.",
                                   ["account", "reason"], registry=registry)
        self.finished = Counter("fairgpu_account_finished_jobs", "Jobs that reached a final state, by status.",
                                ["account", "status"], registry=registry)
        self.usage = Counter("fairgpu_account_usage_slice_seconds", "Slice-seconds used (not decayed).",
                             ["account"], registry=registry)
        self.queue_wait = Histogram(
            "fairgpu_account_queue_wait_seconds", "Time from submission (or requeue) to admission.",
            ["account"], buckets=QUEUE_WAIT_BUCKETS, registry=registry)

    def ensure_account(self, account: str) -> None:
        """Create the account's series at zero so rates exist before its first event."""
        self.admissions.labels(account)
        self.usage.labels(account)
        self.queue_wait.labels(account)
        for reason in PREEMPTION_REASONS:
            self.preemptions.labels(account, reason)
        for status in FINISHED_STATUSES:
            self.finished.labels(account, status)

    def observe_cycle(self, seconds: float, phases: dict[str, float] | None = None) -> None:
        self.cycle_duration.observe(seconds)
        for phase, spent in (phases or {}).items():
            if phase in CYCLE_PHASES:  # a bounded label set
                self.cycle_phase.labels(phase).inc(max(0.0, spent))

    def admitted(self, account: str, queue_wait_s: float) -> None:
        self.admissions.labels(account).inc()
        self.queue_wait.labels(account).observe(max(0.0, queue_wait_s))

    def preempted(self, account: str, kind: str) -> None:
        """`kind`: the preemption's kind (quota.Preemption.kind), one of PREEMPTION_REASONS
        (a message is never parsed)."""
        if kind not in PREEMPTION_REASONS:
            raise ValueError(f"not a preemption kind: {kind!r}")
        self.preemptions.labels(account, kind).inc()

    def job_finished(self, account: str, status: str) -> None:
        label = str(getattr(status, "value", status)).lower()
        if label not in FINISHED_STATUSES:
            raise ValueError(f"not a final status: {status!r}")
        self.finished.labels(account, label).inc()

    def add_usage(self, account: str, slice_seconds: float) -> None:
        if slice_seconds > 0:
            self.usage.labels(account).inc(slice_seconds)


def build_registry(
    view_provider: Callable[[], ClusterView | None], health: Callable[[], LoopHealthLike] | None = None,
) -> tuple[CollectorRegistry, SchedulerMetrics]:
    """The one registry /metrics serves: the scrape-time collectors (the latest view, the
    loop's ``health``) plus the loop's metrics."""
    registry = CollectorRegistry()
    registry.register(FairgpuCollector(view_provider))
    registry.register(LoopHealthCollector(health))
    return registry, SchedulerMetrics(registry)


class ClusterOnly:
    """A registry's families without the per-account ones (duck-types a registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable:
        for family in self._registry.collect():
            if not is_per_account(family):
                yield family


def is_per_account(family) -> bool:
    return family.name.startswith(ACCOUNT_PREFIX) or any("account" in s.labels for s in family.samples)


def render(registry: CollectorRegistry, per_account: bool = True) -> tuple[bytes, str]:
    """(body, content type) of a scrape; ``per_account=False``: cluster-wide series only."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry if per_account else ClusterOnly(registry)), CONTENT_TYPE_LATEST
