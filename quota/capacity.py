"""Capacity and placement of slice requests on physical GPUs.

A node has `gpus` GPUs of one type, each split into `slices_per_gpu` slices.
Free slices are tracked per physical GPU, never as a node total, because Ray's
fractional accounting is per GPU at allocation but total at scheduling: a node
whose two GPUs each have 0.5 free cannot start a 0.75 task (ray#62005). So:

- a request for k < slices_per_gpu slices is placed on ONE GPU with >= k free
  (best fit: the GPU with the least free room that still fits, ties by node and
  index), and runs as a Ray task with num_gpus = k / slices_per_gpu;
- a request for k = m * slices_per_gpu is placed on m WHOLE free GPUs of one node,
  all or nothing, and runs with num_gpus = m;
- any other k (more than one GPU but not a whole number of GPUs) cannot be
  expressed to Ray, so it is infeasible on that node.

Every placement this module returns could be started by Ray at once on the chosen
node. Nodes with the same slices_per_gpu form a pool; pools are tried in order of
slices_per_gpu, then name.

`FreeSlices` is a mutable tracker used inside one decision (and kept across cycles by
quota.state.PolicyState). Lookups are O(slices_per_gpu + GPUs per node): GPUs are
bucketed by free count and nodes by whole free GPUs, each bucket sorted, so ties
always go to the lowest (node, index) whatever the history of takes and gives.
Updates cost a bisect and a list insert, which keeps `decide()` near O(n log n).
"""
from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Iterable

from quota.errors import QuotaError

GpuSlices = tuple[tuple[int, int], ...]  # ((gpu index, slices), ...)

DEFAULT_SLICES_PER_GPU = {"T4": 4, "A10G": 4, "L4": 4, "V100": 4, "A100": 8, "H100": 8, "H200": 8}


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    gpus: int
    slices_per_gpu: int
    gpu_type: str = "T4"

    def check(self) -> None:
        if not self.name:
            raise QuotaError("node name must not be empty")
        if self.gpus < 0:
            raise QuotaError(f"node {self.name}: GPU count must be >= 0 (got {self.gpus})")
        if self.slices_per_gpu < 1:
            raise QuotaError(f"node {self.name}: slices per GPU must be >= 1 (got {self.slices_per_gpu})")

    @property
    def slices(self) -> int:
        return self.gpus * self.slices_per_gpu


@dataclass(frozen=True)
class Capacity:
    nodes: tuple[NodeCapacity, ...] = ()

    def __post_init__(self) -> None:
        seen = set()
        for n in self.nodes:
            n.check()
            if n.name in seen:
                raise QuotaError(f"node {n.name} is declared twice")
            seen.add(n.name)

    @property
    def total_slices(self) -> int:
        return sum(n.slices for n in self.nodes)

    def node(self, name: str) -> NodeCapacity | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None

    def shape_error(self, slices: int) -> str | None:
        """Why `slices` can never be placed on any node, or None if some node could hold it."""
        if slices <= 0:
            return "a request needs at least one slice"
        if not any(n.gpus for n in self.nodes):
            return "there is no GPU capacity"
        for n in self.nodes:
            if n.gpus == 0:
                continue
            if slices < n.slices_per_gpu:
                return None
            if slices % n.slices_per_gpu == 0 and slices // n.slices_per_gpu <= n.gpus:
                return None
        largest = max(n.slices for n in self.nodes)
        if slices > largest:
            return f"{slices} slices is more than any node holds (largest: {largest})"
        spgs = sorted({n.slices_per_gpu for n in self.nodes if n.gpus})
        return (
            f"{slices} slices spans GPUs without being a whole number of GPUs "
            f"(slices per GPU: {', '.join(map(str, spgs))})"
        )


@dataclass(frozen=True)
class Placement:
    node: str
    gpu_slices: GpuSlices
    slices_per_gpu: int

    @property
    def slices(self) -> int:
        return sum(n for _, n in self.gpu_slices)

    @property
    def num_gpus(self) -> float:
        """What to ask Ray for: a fraction of one GPU, or a whole number of GPUs."""
        return self.slices / self.slices_per_gpu


class _Pool:
    """Nodes sharing one slices_per_gpu: GPUs bucketed by free slices, nodes by whole free GPUs.

    Each bucket is a sorted list (of GPU numbers rank * width + index, or of node ranks,
    ranks by node name), so the first entry is always the lowest (node, index): a
    placement depends on the free slices alone, never on the order of earlier takes and
    gives. That keeps `decide(snapshot)` independent of the order of the running jobs and
    lets quota.state.PolicyState keep one tracker across cycles and still decide the same."""

    def __init__(self, spg: int, nodes: list[NodeCapacity]):
        self.spg = spg
        ordered = sorted(nodes, key=lambda n: n.name)
        self.nodes = {n.name: n for n in ordered}
        self.names = [n.name for n in ordered]
        self.rank = {n.name: r for r, n in enumerate(ordered)}
        self.width = width = max((n.gpus for n in nodes), default=0) or 1
        self.free: list[int] = [0] * (len(ordered) * width)
        self.gpu_bucket: list[list[int]] = [[] for _ in range(spg + 1)]
        self.whole: list[int] = []
        self.node_bucket: list[list[int]] = [[] for _ in range(width + 1)]
        self.total_free = 0
        for r, n in enumerate(ordered):
            for i in range(n.gpus):
                self.free[r * width + i] = spg
                self.gpu_bucket[spg].append(r * width + i)
            self.whole.append(n.gpus)
            self.node_bucket[n.gpus].append(r)
            self.total_free += n.slices

    def _set_free(self, g: int, new: int) -> None:
        old = self.free[g]
        if old == new:
            return
        b = self.gpu_bucket[old]
        del b[bisect_left(b, g)]
        insort(self.gpu_bucket[new], g)
        self.free[g] = new
        self.total_free += new - old
        delta = (new == self.spg) - (old == self.spg)
        if delta:
            r = g // self.width
            w = self.whole[r]
            nb = self.node_bucket[w]
            del nb[bisect_left(nb, r)]
            self.whole[r] = w + delta
            insort(self.node_bucket[w + delta], r)

    def find(self, k: int) -> Placement | None:
        spg = self.spg
        if k < spg:
            for f in range(k, spg + 1):
                bucket = self.gpu_bucket[f]
                if bucket:
                    r, idx = divmod(bucket[0], self.width)
                    return Placement(self.names[r], ((idx, k),), spg)
            return None
        if k % spg:
            return None
        m = k // spg
        for c in range(m, len(self.node_bucket)):
            bucket = self.node_bucket[c]
            if bucket:
                r = bucket[0]
                base = r * self.width
                node = self.names[r]
                gpus = [i for i in range(self.nodes[node].gpus) if self.free[base + i] == spg][:m]
                return Placement(node, tuple((i, spg) for i in gpus), spg)
        return None

    def _gpu(self, node: str, idx: int) -> int | None:
        r = self.rank.get(node)
        if r is None or not 0 <= idx < self.nodes[node].gpus:
            return None
        return r * self.width + idx

    def take(self, node: str, gpu_slices: GpuSlices) -> None:
        for idx, n in gpu_slices:
            g = self._gpu(node, idx)
            if g is None or self.free[g] < n:
                raise QuotaError(f"GPU {idx} of node {node} has no room for {n} more slices")
            self._set_free(g, self.free[g] - n)

    def give(self, node: str, gpu_slices: GpuSlices) -> None:
        for idx, n in gpu_slices:
            g = self._gpu(node, idx)
            self._set_free(g, min(self.spg, self.free[g] + n))


class FreeSlices:
    """Free slices per physical GPU across all nodes, for one decision."""

    def __init__(self, capacity: Capacity):
        by_spg: dict[int, list[NodeCapacity]] = {}
        for n in capacity.nodes:
            by_spg.setdefault(n.slices_per_gpu, []).append(n)
        self.pools = [_Pool(spg, by_spg[spg]) for spg in sorted(by_spg)]
        self._pool_of = {n.name: p for p in self.pools for n in p.nodes.values()}

    @property
    def total_free(self) -> int:
        return sum(p.total_free for p in self.pools)

    def find(self, k: int) -> Placement | None:
        for pool in self.pools:
            placement = pool.find(k)
            if placement is not None:
                return placement
        return None

    def compatible_free(self, k: int) -> int:
        """Free slices in the pools where a request of k slices has a valid shape."""
        return sum(p.total_free for p in self.pools if k < p.spg or k % p.spg == 0)

    def has_node(self, node: str) -> bool:
        return node in self._pool_of

    def take(self, node: str, gpu_slices: GpuSlices) -> None:
        pool = self._pool_of.get(node)
        if pool is None:
            raise QuotaError(f"unknown node {node}")
        pool.take(node, gpu_slices)

    def give(self, node: str, gpu_slices: GpuSlices) -> None:
        self._pool_of[node].give(node, gpu_slices)

    def fits_after_release(self, k: int, released: Iterable[tuple[str, GpuSlices]]) -> Placement | None:
        """Where k would fit if `released` placements were freed (state is restored after)."""
        released = list(released)
        for node, gs in released:
            self.give(node, gs)
        try:
            return self.find(k)
        finally:
            for node, gs in released:
                self.take(node, gs)
