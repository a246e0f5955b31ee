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
Updates cost a bisect and an insert into a block of a few hundred entries (`_SortedInts`),
never a move of a whole bucket, which keeps `decide()` near O(n log n) even on the
largest accepted cluster (quota.limits: 10,000 nodes x 64 GPUs x 64 slices). Memory is
O(nodes x GPUs), never O(slices).
"""
from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Mapping

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
        most = self._most_gpus
        if not most:
            return "there is no GPU capacity"
        for spg, gpus in most.items():
            if slices < spg:
                return None
            if slices % spg == 0 and slices // spg <= gpus:
                return None
        largest = max(spg * gpus for spg, gpus in most.items())
        if slices > largest:
            return f"{slices} slices is more than any node holds (largest: {largest})"
        spgs = sorted(most)
        return (
            f"{slices} slices spans GPUs without being a whole number of GPUs "
            f"(slices per GPU: {', '.join(map(str, spgs))})"
        )

    @cached_property
    def _most_gpus(self) -> dict[int, int]:
        """The most GPUs of any node, per slices_per_gpu (nodes with GPUs only): all that decides
        a request's shape, so `shape_error` costs O(distinct slices_per_gpu), not O(nodes)."""
        most: dict[int, int] = {}
        for n in self.nodes:
            if n.gpus:
                most[n.slices_per_gpu] = max(most.get(n.slices_per_gpu, 0), n.gpus)
        return most


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


class _SortedInts:
    """A sorted set of ints kept in blocks of at most 2 * LOAD, with the blocks' maxima.

    A plain sorted list costs a move of the whole list per insert or delete near its head,
    which on the largest accepted cluster (640,000 GPUs in one bucket) made one decision take
    seconds; here each costs two bisects and a move inside one block. The first entry is
    always the smallest, as in a sorted list, so placements are the same."""

    __slots__ = ("_blocks", "_maxes")
    LOAD = 256

    def __init__(self, ordered: Iterable[int] = ()):
        values = list(ordered)  # ascending, no duplicates
        load = self.LOAD
        self._blocks = [values[i:i + load] for i in range(0, len(values), load)]
        self._maxes = [b[-1] for b in self._blocks]

    def __bool__(self) -> bool:
        return bool(self._maxes)

    def first(self) -> int:
        return self._blocks[0][0]

    def add(self, x: int) -> None:
        maxes = self._maxes
        if not maxes:
            self._blocks.append([x])
            maxes.append(x)
            return
        i = bisect_left(maxes, x)
        if i == len(maxes):
            i -= 1
            block = self._blocks[i]
            block.append(x)
            maxes[i] = x
        else:
            block = self._blocks[i]
            insort(block, x)
        if len(block) > 2 * self.LOAD:
            half = block[self.LOAD:]
            del block[self.LOAD:]
            self._blocks.insert(i + 1, half)
            maxes[i] = block[-1]
            maxes.insert(i + 1, half[-1])

    def remove(self, x: int) -> None:
        """Remove x, which must be present."""
        maxes = self._maxes
        i = bisect_left(maxes, x)
        block = self._blocks[i]
        j = bisect_left(block, x)
        del block[j]
        if not block:
            del self._blocks[i], maxes[i]
        elif j == len(block):
            maxes[i] = block[-1]


class _Pool:
    """Nodes sharing one slices_per_gpu: GPUs bucketed by free slices, nodes by whole free GPUs.

    Each bucket is a sorted set (`_SortedInts`, of GPU numbers rank * width + index, or of node ranks,
    ranks by node name), so the first entry is always the lowest (node, index): a
    placement depends on the free slices alone, never on the order of earlier takes and
    gives. That keeps `decide(snapshot)` independent of the order of the running jobs and
    lets quota.state.PolicyState keep one tracker across cycles and still decide the same.

    Jobs that already run are booked with `hold` (or in bulk, `held` at construction), which
    never refuses: a node re-declared smaller under its jobs leaves GPUs holding more than
    they have. Those GPUs have 0 free and the slices beyond in `excess`; GPUs the node no
    longer has are not tracked. `give` returns the excess first, so holding and giving the
    same jobs, in any order, always ends in the same state."""

    def __init__(self, spg: int, nodes: list[NodeCapacity], held: dict[str, dict[int, int]] | None = None):
        self.spg = spg
        ordered = sorted(nodes, key=lambda n: n.name)
        self.nodes = {n.name: n for n in ordered}
        self.names = [n.name for n in ordered]
        self.rank = {n.name: r for r, n in enumerate(ordered)}
        self.width = width = max((n.gpus for n in nodes), default=0) or 1
        self.free: list[int] = [0] * (len(ordered) * width)
        self.excess: dict[int, int] = {}  # GPU -> slices held beyond its room (always 0 free then)
        self.whole: list[int] = []
        by_free: list[list[int]] = [[] for _ in range(spg + 1)]  # GPUs in (node, index) order
        by_whole: list[list[int]] = [[] for _ in range(width + 1)]
        self.total_free = 0
        for r, n in enumerate(ordered):
            base = r * width
            used = held.get(n.name) if held else None
            if not used:  # the common case: every GPU of the node is free
                self.free[base:base + n.gpus] = [spg] * n.gpus
                by_free[spg].extend(range(base, base + n.gpus))
                whole = n.gpus
                self.total_free += n.slices
            else:
                whole = 0
                for i in range(n.gpus):
                    f = spg - used.get(i, 0)
                    if f < 0:
                        self.excess[base + i] = -f
                        f = 0
                    self.free[base + i] = f
                    by_free[f].append(base + i)
                    whole += f == spg
                    self.total_free += f
            self.whole.append(whole)
            by_whole[whole].append(r)
        self.gpu_bucket: list[_SortedInts] = [_SortedInts(b) for b in by_free]
        self.node_bucket: list[_SortedInts] = [_SortedInts(b) for b in by_whole]

    def _set_free(self, g: int, new: int) -> None:
        old = self.free[g]
        if old == new:
            return
        self.gpu_bucket[old].remove(g)
        self.gpu_bucket[new].add(g)
        self.free[g] = new
        self.total_free += new - old
        delta = (new == self.spg) - (old == self.spg)
        if delta:
            r = g // self.width
            w = self.whole[r]
            self.node_bucket[w].remove(r)
            self.whole[r] = w + delta
            self.node_bucket[w + delta].add(r)

    def find(self, k: int) -> Placement | None:
        spg = self.spg
        if k < spg:
            for f in range(k, spg + 1):
                bucket = self.gpu_bucket[f]
                if bucket:
                    r, idx = divmod(bucket.first(), self.width)
                    return Placement(self.names[r], ((idx, k),), spg)
            return None
        if k % spg:
            return None
        m = k // spg
        for c in range(m, len(self.node_bucket)):
            bucket = self.node_bucket[c]
            if bucket:
                r = bucket.first()
                base = r * self.width
                node = self.names[r]
                gpus = [i for i in range(self.nodes[node].gpus) if self.free[base + i] == spg][:m]
                return Placement(node, tuple((i, spg) for i in gpus), spg)
        return None

    def fit_after(self, sizes: Iterable[int], back: Mapping[int, int]) -> set[int]:
        """The sizes `find` places once `back[g]` slices return to each GPU g (as `give` would
        return them: excess first), without changing the pool."""
        spg, free, excess = self.spg, self.free, self.excess
        after: dict[int, int] = {}
        for g, n in back.items():
            if excess and g in excess:
                n -= min(excess[g], n)
            after[g] = min(spg, free[g] + n)
        best = max(after.values(), default=0)
        gained: dict[int, int] = {}  # node rank -> GPUs that become wholly free
        for g, f in after.items():
            if f == spg and free[g] != spg:
                r = g // self.width
                gained[r] = gained.get(r, 0) + 1
        most_whole = max((self.whole[r] + n for r, n in gained.items()), default=0)
        out = set()
        for k in sizes:
            if self.find(k) is not None:
                out.add(k)
            elif k < spg:
                if best >= k:
                    out.add(k)
            elif k % spg == 0 and most_whole >= k // spg:
                out.add(k)
        return out

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

    def hold(self, node: str, gpu_slices: GpuSlices) -> None:
        """Book slices a job already holds, past a GPU's room if the node shrank under it."""
        for idx, n in gpu_slices:
            g = self._gpu(node, idx)
            if g is None:
                continue  # a GPU the node no longer has
            f = self.free[g]
            if n <= f:
                self._set_free(g, f - n)
            else:
                self._set_free(g, 0)
                self.excess[g] = self.excess.get(g, 0) + n - f

    def give(self, node: str, gpu_slices: GpuSlices) -> None:
        excess = self.excess
        for idx, n in gpu_slices:
            g = self._gpu(node, idx)
            if g is None:
                continue
            if excess and g in excess:  # what was held beyond the room goes first
                back = min(excess[g], n)
                excess[g] -= back
                if not excess[g]:
                    del excess[g]
                n -= back
            self._set_free(g, min(self.spg, self.free[g] + n))


class FreeSlices:
    """Free slices per physical GPU across all nodes, for one decision.

    `held`: the placements (node, gpu_slices) of jobs already running, booked in one pass
    as `hold` would book them one by one (placements on unknown nodes are skipped)."""

    def __init__(self, capacity: Capacity, held: Iterable[tuple[str, GpuSlices]] = ()):
        by_spg: dict[int, list[NodeCapacity]] = {}
        for n in capacity.nodes:
            by_spg.setdefault(n.slices_per_gpu, []).append(n)
        used: dict[str, dict[int, int]] = {}
        for node, gpu_slices in held:
            per_gpu = used.get(node)
            if per_gpu is None:
                used[node] = per_gpu = {}
            for idx, n_sl in gpu_slices:
                per_gpu[idx] = per_gpu.get(idx, 0) + n_sl
        self.pools = [_Pool(spg, by_spg[spg], used) for spg in sorted(by_spg)]
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
        """Book a new placement; QuotaError if it does not fit (a placement `find` gave always does)."""
        pool = self._pool_of.get(node)
        if pool is None:
            raise QuotaError(f"unknown node {node}")
        pool.take(node, gpu_slices)

    def hold(self, node: str, gpu_slices: GpuSlices) -> None:
        """Book what a running job holds; never refuses (see _Pool). Unknown nodes are skipped."""
        pool = self._pool_of.get(node)
        if pool is not None:
            pool.hold(node, gpu_slices)

    def give(self, node: str, gpu_slices: GpuSlices) -> None:
        self._pool_of[node].give(node, gpu_slices)

    def fit_after_release(self, sizes: Iterable[int], released: Iterable[tuple[str, GpuSlices]]) -> set[int]:
        """The sizes `find` would place if the `released` placements were given back, worked
        out without changing anything (a search's upper bound: quota/preemption.py)."""
        per_pool: dict[_Pool, dict[int, int]] = {}  # slices back per GPU, per pool
        for node, gpu_slices in released:
            pool = self._pool_of.get(node)
            if pool is None:
                continue
            back = per_pool.setdefault(pool, {})
            for idx, n in gpu_slices:
                g = pool._gpu(node, idx)
                if g is not None:
                    back[g] = back.get(g, 0) + n
        out: set[int] = set()
        for pool in self.pools:
            left = [k for k in sizes if k not in out]
            if not left:
                break
            out.update(pool.fit_after(left, per_pool.get(pool, {})))
        return out
