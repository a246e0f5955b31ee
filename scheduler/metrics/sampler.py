"""One NVML sampler actor per Ray node that has GPUs, and turning their samples into views.

Invariants:
- Ray is passed in (or imported inside functions), never imported at module level.
- `NvmlSampler` takes num_cpus=0 and no GPU, so it never holds a slice a job could
  use; it is pinned with a hard NodeAffinitySchedulingStrategy to its node.
- Actors are named per node (`fairgpu-nvml-<node id>`) with get_if_exists, so calling
  `start_samplers` again after nodes join adds only the new nodes' samplers.
- `collect` never raises for one bad node: an actor that died or timed out reports
  `ok=False` and its node shows as having no NVML data.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.metrics.nvml import JobId, NodeSample, NvmlReader, job_memory
from scheduler.metrics.view import GpuView

ACTOR_PREFIX = "fairgpu-nvml-"


class _Sampler:
    """The actor's body (plain class, so it is testable without Ray)."""

    def __init__(self, nvml_module: str | None = None, hostname: str | None = None) -> None:
        self._reader = NvmlReader(nvml_module, hostname)

    def hostname(self) -> str:
        return self._reader.hostname

    def sample(self) -> NodeSample | None:
        return self._reader.sample()

    def job_memory(self, pids: Mapping[int, JobId]) -> dict[JobId, int]:
        """Memory per job right now, for {pid: job id} of processes on this node."""
        s = self._reader.sample()
        return job_memory(s, pids) if s is not None else {}


@dataclass(frozen=True)
class NodeReport:
    node_id: str
    hostname: str | None  # None when the actor could not be reached
    sample: NodeSample | None  # None: no NVML on the node (or unreachable)
    ok: bool = True  # False: the actor died or timed out


def gpu_nodes(ray) -> list[dict]:
    """Alive Ray nodes that declare at least one GPU."""
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]


def start_samplers(ray, nvml_module: str | None = None) -> dict[str, object]:
    """{node id: actor handle}, one NvmlSampler pinned to each alive GPU node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_cls = ray.remote(num_cpus=0, max_restarts=-1)(_Sampler)
    handles = {}
    for node in gpu_nodes(ray):
        node_id = node["NodeID"]
        handles[node_id] = actor_cls.options(
            name=ACTOR_PREFIX + node_id, get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(nvml_module, node.get("NodeManagerHostname"))
    return handles


def collect(ray, handles: Mapping[str, object], timeout_s: float = 5.0) -> list[NodeReport]:
    """One sample from every sampler, in the order of `handles`."""
    refs = {node_id: (h.hostname.remote(), h.sample.remote()) for node_id, h in handles.items()}
    ray.wait([r for pair in refs.values() for r in pair], num_returns=2 * len(refs), timeout=timeout_s)
    reports = []
    for node_id, (host_ref, sample_ref) in refs.items():
        try:
            host, sample = ray.get([host_ref, sample_ref], timeout=0.01)
            reports.append(NodeReport(node_id, host, sample))
        except Exception:  # RayError or GetTimeoutError: the node is gone or stuck
            reports.append(NodeReport(node_id, None, None, ok=False))
    return reports


def gpu_views(reports: Iterable[NodeReport]) -> tuple[GpuView, ...]:
    """ClusterView.gpus: every device of every node with NVML data."""
    out = []
    for r in reports:
        if r.sample is None:
            continue
        for d in r.sample.devices:
            out.append(GpuView(r.sample.hostname, d.index, d.uuid, d.name, d.utilisation_ratio,
                               d.memory_used_bytes, d.memory_total_bytes, d.power_watts))
    return tuple(out)


def nvml_nodes(reports: Iterable[NodeReport]) -> dict[str, bool]:
    """ClusterView.nvml_nodes: hostname (node id if unreachable) -> has real NVML data."""
    return {r.hostname or r.node_id: r.sample is not None for r in reports}


def gpu_source(ray, nvml_module: str | None = None, timeout_s: float = 5.0):
    """A callable for the publisher: () -> (ClusterView.gpus, ClusterView.nvml_nodes).

    Each call starts samplers on GPU nodes that joined since the last call, then
    samples every node once.
    """
    handles: dict[str, object] = {}

    def read() -> tuple[tuple[GpuView, ...], dict[str, bool]]:
        handles.update(start_samplers(ray, nvml_module))
        alive = {n["NodeID"] for n in gpu_nodes(ray)}
        for gone in set(handles) - alive:
            del handles[gone]
        reports = collect(ray, handles, timeout_s)
        return gpu_views(reports), nvml_nodes(reports)

    return read
