"""A period's fairness: entitlement and holdings integrated over time (``fairgpu report``).

The input is a list of ``Span``: a leaf account held ``slices`` over ``[start, end)``
(HELD), or waited for them (WAITING). Times are plain numbers (epoch seconds); the
period is ``[since, until)`` and spans are clipped to it.

Between two consecutive change points (a span's start or end) nothing changes, so
each step is exact:
- an account's demand is what its subtree holds plus what it waits for (rolled up the
  tree, capped by its cap: ``quota.entitlement.subtree_demand``), and its entitlement
  is ``quota.entitlements`` of the tree and capacity over that demand, the one
  water-filling the policy uses. It changes only when demand does (a submission, an
  end), not on an admission, so it is recomputed only then (and kept per demand
  vector, which a month repeats);
- ``owed_slice_s`` += entitlement * dt, ``held_slice_s`` += held * dt;
- ``waiting_s`` += dt while the subtree has a job waiting, and ``starved_s`` += dt
  while it also holds less than half its entitlement.
Inner accounts get their subtree's figures. An account's sums are brought up to date
only when one of its values is about to change, so a step costs the changed leaves'
ancestors (and a water-filling when demand moved), not a pass over the tree. Jain's index is over the top-level
accounts owed anything, x_i = held_i / owed_i (1: each got exactly what it was owed).

The tree, its weights and the capacity are taken as constant over the period (the
caller passes the ones it has). Pure and deterministic: no clock, no I/O.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from quota.entitlement import entitlements
from quota.equity import jain_index
from quota.errors import QuotaError
from quota.tree import AccountTree

HELD, WAITING = "held", "waiting"


@dataclass(frozen=True)
class Span:
    """A leaf account held (HELD) or waited for (WAITING) ``slices`` over [start, end)."""

    account: str
    start: float
    end: float
    slices: int
    kind: str = HELD


@dataclass(frozen=True)
class PeriodFigures:
    """One account's figures over the period (its subtree's, for an inner account)."""

    account: str
    held_slice_s: float  # slice-seconds held
    owed_slice_s: float  # slice-seconds of entitlement
    waiting_s: float  # seconds with a job waiting
    starved_s: float  # seconds with a job waiting while holding under half the entitlement


@dataclass(frozen=True)
class Bucket:
    """Mean entitled and held slices per account over [start, end) (accounts at 0 left out)."""

    start: float
    end: float
    owed: dict[str, float]
    held: dict[str, float]


@dataclass(frozen=True)
class PeriodResult:
    since: float
    until: float
    capacity: float  # slices
    accounts: dict[str, PeriodFigures]  # every account of the tree, in tree order
    jain_index: float
    timeline: tuple[Bucket, ...]

    @property
    def capacity_slice_s(self) -> float:
        return self.capacity * (self.until - self.since)


def integrate(tree: AccountTree, capacity: float, spans: Iterable[Span], since: float, until: float,
              buckets: int = 0) -> PeriodResult:
    """Integrate entitlement and holdings over [since, until); ``buckets`` > 0 also
    returns that many equal buckets of mean owed and held slices (for a plot)."""
    if not until > since:
        raise QuotaError(f"the period must end after it starts (since {since}, until {until})")
    deltas: dict[float, list[tuple[str, int, str]]] = {}
    for s in spans:
        spec = tree.spec(s.account)
        if not tree.is_leaf(spec.name):
            raise QuotaError(f"account {s.account} has sub-accounts: spans belong to leaf accounts")
        if s.kind not in (HELD, WAITING) or s.slices <= 0 or s.end < s.start:
            raise QuotaError(f"invalid span {s}")
        a, b = max(s.start, since), min(s.end, until)
        if a >= b:
            continue
        deltas.setdefault(a, []).append((s.account, s.slices, s.kind))
        deltas.setdefault(b, []).append((s.account, -s.slices, s.kind))
    run = _Run(tree, capacity, since, _Grid(since, until, buckets))
    for t in sorted(deltas):
        if t >= until:
            break
        run.step(t, deltas[t])
    run.flush_all(until)
    figures = {n: PeriodFigures(n, *run.acc[n]) for n in tree.order}
    tops = [n for n in tree.kids(None) if figures[n].owed_slice_s > 0]
    jain = jain_index([figures[n].held_slice_s / figures[n].owed_slice_s for n in tops])
    return PeriodResult(since, until, float(capacity), figures, jain, run.grid.buckets())


CACHE_SIZE = 4096  # entitlements kept per demand vector (a month's demand repeats itself)


class _Run:
    """The state at the current change point. Each account's integrals are brought up to
    date (``flush``) only when its held, waiting or entitled slices are about to change,
    so a step costs the changed leaves' ancestors, plus one water-filling when demand moved."""

    def __init__(self, tree: AccountTree, capacity: float, since: float, grid: _Grid) -> None:
        self.tree, self.capacity, self.grid = tree, capacity, grid
        self.leaves = tree.leaves()
        self.chain = {n: tree.ancestors(n) for n in self.leaves}
        self.held = dict.fromkeys(tree.order, 0)  # rolled up
        self.waiting = dict.fromkeys(tree.order, 0)  # rolled up
        self.entitled = dict.fromkeys(tree.order, 0.0)
        self.demand = dict.fromkeys(self.leaves, 0)
        self.last = dict.fromkeys(tree.order, since)
        self.acc = {n: [0.0, 0.0, 0.0, 0.0] for n in tree.order}  # held, owed, waiting, starved
        self.cache: dict[tuple[int, ...], dict[str, float]] = {}

    def flush(self, n: str, t: float) -> None:
        dt = t - self.last[n]
        if dt <= 0:
            return
        h, e, row = self.held[n], self.entitled[n], self.acc[n]
        row[0] += h * dt
        row[1] += e * dt
        if self.waiting[n] > 0:
            row[2] += dt
            if h < e / 2:
                row[3] += dt
        self.grid.add(n, self.last[n], t, e, h)
        self.last[n] = t

    def flush_all(self, t: float) -> None:
        for n in self.tree.order:
            self.flush(n, t)

    def step(self, t: float, changes: list[tuple[str, int, str]]) -> None:
        before = {leaf: self.demand[leaf] for leaf, _, _ in changes}
        for leaf, slices, kind in changes:
            side = self.held if kind == HELD else self.waiting
            for a in self.chain[leaf]:
                self.flush(a, t)
                side[a] += slices
            self.demand[leaf] += slices
        if all(self.demand[leaf] == d for leaf, d in before.items()):
            return  # admissions and requeues: the demand, so the entitlement, did not move
        key = tuple(self.demand[n] for n in self.leaves)
        entitled = self.cache.get(key)
        if entitled is None:
            entitled = entitlements(self.tree, self.capacity, {n: float(d) for n, d in self.demand.items() if d})
            if len(self.cache) >= CACHE_SIZE:
                self.cache.clear()
            self.cache[key] = entitled
        for n, e in entitled.items():
            if e != self.entitled[n]:
                self.flush(n, t)
                self.entitled[n] = e


class _Grid:
    """Time-weighted sums of owed and held slices in equal buckets of [since, until)."""

    def __init__(self, since: float, until: float, n: int) -> None:
        self.since, self.until, self.n = since, until, max(0, n)
        self.width = (until - since) / self.n if self.n else 0.0
        self.owed: list[dict[str, float]] = [{} for _ in range(self.n)]
        self.held: list[dict[str, float]] = [{} for _ in range(self.n)]

    def add(self, name: str, a: float, b: float, owed: float, held: float) -> None:
        if not self.n or not (owed or held):
            return
        first = max(0, min(self.n - 1, int((a - self.since) // self.width)) - 1)  # -1: float rounding
        for k in range(first, self.n):
            lo, hi = self.since + k * self.width, self.since + (k + 1) * self.width
            if lo >= b:
                break
            overlap = min(b, hi) - max(a, lo)
            if overlap <= 0:
                continue
            for target, v in ((self.owed[k], owed), (self.held[k], held)):
                if v:
                    target[name] = target.get(name, 0.0) + v * overlap

    def buckets(self) -> tuple[Bucket, ...]:
        w = self.width
        return tuple(Bucket(self.since + k * w, self.since + (k + 1) * w,
                            {n: v / w for n, v in self.owed[k].items()}, {n: v / w for n, v in self.held[k].items()})
                     for k in range(self.n))

