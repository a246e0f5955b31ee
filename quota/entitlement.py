"""Entitlement: weighted max-min (water-filling) of capacity among accounts with demand.

At every level of the tree, a parent's entitlement (the capacity at the top) is split
among its children. Child i, with weight w_i, guarantee g_i, cap c_i and demand d_i
(the slices its subtree is running or waiting for, capped by c_i), is entitled to

    e_i = clamp(lambda * w_i, lo_i, hi_i),   lo_i = min(g_i, d_i),   hi_i = min(d_i, c_i)

with one water level lambda per parent chosen so that sum(e_i) = min(capacity, sum(hi_i)).

So: guarantees come first (an account gets min(guarantee, demand) before anyone gets
more), caps are respected, and it is work-conserving (what one account cannot use
goes, by weight, to those that still have demand). An account with no demand is
entitled to 0. If capacity falls below the guarantees (a node left), the guarantees
are scaled down in proportion. Entitlements are floats in slices.
"""
from __future__ import annotations

import threading
from typing import Mapping, Sequence

from quota.tree import AccountTree


def water_fill(capacity: float, items: Sequence[tuple[str, float, float, float]]) -> dict[str, float]:
    """items: (name, weight, lo, hi) with 0 <= lo <= hi. Returns each name's share."""
    out: dict[str, float] = {}
    _fill(capacity, [it[0] for it in items], [it[1] for it in items], [it[2] for it in items],
          [it[3] for it in items], out)
    return out


def _fill(capacity: float, names: list[str], ws: list[float], los: list[float], his: list[float],
          out: dict[str, float]) -> None:
    """water_fill on columns, writing each share into `out`."""
    if not names:
        return
    sum_lo = sum(los)
    sum_hi = sum(his)
    target = min(capacity, sum_hi)
    if target <= sum_lo:
        scale = target / sum_lo if sum_lo > 0 else 0.0
        for name, lo in zip(names, los):
            out[name] = lo * scale
        return
    # f(lam) = sum clamp(lam*w, lo, hi) is piecewise linear and non-decreasing in lam.
    # Walk the breakpoints in order, tracking the slope (sum of w of unclamped items).
    # Items with lo == hi never grow: they add to sum_lo and to no slope, so they make no events.
    growing = [i for i in range(len(names)) if los[i] < his[i]]
    points = [los[i] / ws[i] for i in growing]  # item starts growing
    points += [his[i] / ws[i] for i in growing]  # item stops growing
    slopes = [ws[i] for i in growing]
    slopes += [-w for w in slopes]
    # sort by point alone (floats sort fast); the sort is stable, so at a tie starts come first
    order = sorted(range(len(points)), key=points.__getitem__)
    value = sum_lo
    slope = 0.0
    lam = 0.0
    for i in order:
        point = points[i]
        if slope > 0 and value + slope * (point - lam) >= target:
            lam = lam + (target - value) / slope
            break
        value += slope * (point - lam)
        lam = point
        slope += slopes[i]
    else:
        lam = points[order[-1]]
    for name, w, lo, hi in zip(names, ws, los, his):
        out[name] = min(max(lam * w, lo), hi)


def subtree_demand(tree: AccountTree, leaf_demand: Mapping[str, float]) -> dict[str, float]:
    """Each account's demand: its own (leaves) or its children's summed, capped by its cap."""
    return _subtree_demand(_plan(tree), leaf_demand)


def _subtree_demand(plan: _Plan, leaf_demand: Mapping[str, float]) -> dict[str, float]:
    demand: dict[str, float] = {}
    for name, kids, cap in plan.bottom_up:
        d = sum([demand[k] for k in kids]) if kids else float(leaf_demand.get(name, 0.0))
        demand[name] = d if cap is None or d <= cap else cap
    return demand


def entitlements(tree: AccountTree, capacity: float, leaf_demand: Mapping[str, float]) -> dict[str, float]:
    """Entitled slices for every account in the tree (inner accounts included).

    Accounts without demand are entitled to 0 and left out of the water-filling (their
    lo = hi = 0 would not move the water level); only inner accounts are split further."""
    plan = _plan(tree)
    demand = _subtree_demand(plan, leaf_demand)
    out = dict.fromkeys(tree.order, 0.0)
    kids_of = plan.kids

    def split(parent: str | None, cap: float) -> None:
        names: list[str] = []
        ws: list[float] = []
        los: list[float] = []
        his: list[float] = []
        inner: list[str] = []
        for k, w, g, has_kids in kids_of.get(parent, ()):
            d = demand[k]
            if d > 0:
                names.append(k)
                ws.append(w)
                los.append(g if g <= d else d)
                his.append(d)
                if has_kids:
                    inner.append(k)
        _fill(cap, names, ws, los, his, out)
        for k in inner:
            split(k, out[k])

    split(None, float(capacity))
    return out


class _Plan:
    """What the water-filling reads from a tree, laid out once per tree: the accounts
    bottom-up (name, children, cap as a float) and each parent's children as
    (name, weight, guarantee as a float, has children)."""

    def __init__(self, tree: AccountTree):
        children, accounts = tree.children, tree.accounts
        self.bottom_up = tuple((name, tuple(children.get(name) or ()), _as_float(accounts[name].cap))
                               for name in reversed(tree.order))
        self.kids = {parent: tuple((k, accounts[k].weight, float(accounts[k].guaranteed), bool(children.get(k)))
                                   for k in kids)
                     for parent, kids in children.items()}


def _as_float(cap: int | None) -> float | None:
    return None if cap is None else float(cap)


_PLANS: dict[int, tuple[AccountTree, _Plan]] = {}  # id(tree) -> (tree, plan); the tree is kept so its id stays its own
_MAX_PLANS = 16
_PLANS_LOCK = threading.Lock()


def _plan(tree: AccountTree) -> _Plan:
    hit = _PLANS.get(id(tree))
    if hit is not None and hit[0] is tree:
        return hit[1]
    plan = _Plan(tree)
    with _PLANS_LOCK:
        while len(_PLANS) >= _MAX_PLANS:
            del _PLANS[next(iter(_PLANS))]  # the oldest
        _PLANS[id(tree)] = (tree, plan)
    return plan
