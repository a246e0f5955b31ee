"""fairgpu's metrics: the view the loop publishes, the Prometheus exporter, NVML sampling.

Invariants: importing this package imports nothing heavy. `view` needs no
prometheus_client; `exporter` needs prometheus_client; `nvml` and `sampler` import
pynvml and Ray only inside the functions that use them.
"""
from scheduler.metrics.view import (
    PENDING_REASONS,
    AccountView,
    ClusterView,
    GpuView,
    WorkloadView,
)

__all__ = ["PENDING_REASONS", "AccountView", "ClusterView", "GpuView", "WorkloadView"]
