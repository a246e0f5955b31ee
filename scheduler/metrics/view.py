"""What the scheduling loop publishes after every cycle for /metrics to read.

Invariants:
- Plain frozen dataclasses; importing this module imports no prometheus_client,
  Ray, NVML or database code (only quota's names, which are standard library).
- A ClusterView is a finished picture of one cycle: the collector reads only the
  latest one, so a scrape never sees half a cycle.
- Units are in the field names or stated: slices are counts, bytes are bytes,
  ratios are 0-1, times are epoch seconds.
- No per-job data: everything is per cluster, account, GPU, node or workload kind.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from quota.snapshot import REASONS as PENDING_REASONS  # noqa: F401 (re-exported: the policy owns why a job waits)


@dataclass(frozen=True)
class AccountView:
    name: str
    parent: str | None  # None for the root
    weight: float
    guaranteed_slices: float
    max_slices: float | None  # None: no cap
    entitled_slices: float
    allocated_slices: float
    running_jobs: int
    pending_by_reason: dict[str, int] = field(default_factory=dict)  # reason in PENDING_REASONS -> jobs
    decayed_usage: float = 0.0  # slice-seconds, decayed with the policy's half-life
    fairshare_factor: float = 1.0  # 0-1, Slurm's F


@dataclass(frozen=True)
class GpuView:
    hostname: str
    index: int
    uuid: str
    model_name: str
    utilisation_ratio: float | None  # 0-1 (NVML gives %); None where NVML cannot tell
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float | None  # None where the GPU does not report power


@dataclass(frozen=True)
class WorkloadView:
    """Finished runs of one (model, framework, device) kind, aggregated."""

    model: str
    framework: str
    device: str
    runs: int
    samples_per_second_mean: float
    peak_memory_bytes_max: int


@dataclass(frozen=True)
class ClusterView:
    at: float  # epoch seconds at the end of the cycle
    capacity_slices: int
    free_slices: int
    jain_index: float
    max_share_deviation: float  # largest |actual - entitled| share, fraction of capacity
    usage_gini: float
    ray_pending_tasks: int
    accounts: tuple[AccountView, ...] = ()
    gpus: tuple[GpuView, ...] = ()
    nvml_nodes: dict[str, bool] = field(default_factory=dict)  # hostname -> has real NVML data
    workloads: tuple[WorkloadView, ...] = ()

    @property
    def slice_utilisation_ratio(self) -> float:
        if self.capacity_slices <= 0:
            return 0.0
        return (self.capacity_slices - self.free_slices) / self.capacity_slices
