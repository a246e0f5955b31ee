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

from typing import Mapping, Sequence

from quota.tree import AccountTree


def water_fill(capacity: float, items: Sequence[tuple[str, float, float, float]]) -> dict[str, float]:
    """items: (name, weight, lo, hi) with 0 <= lo <= hi. Returns each name's share."""
    if not items:
        return {}
    sum_lo = sum([it[2] for it in items])
    sum_hi = sum([it[3] for it in items])
    target = min(capacity, sum_hi)
    if target <= sum_lo:
        scale = target / sum_lo if sum_lo > 0 else 0.0
        return {name: lo * scale for name, _, lo, _ in items}
    # f(lam) = sum clamp(lam*w, lo, hi) is piecewise linear and non-decreasing in lam.
    # Walk the breakpoints in order, tracking the slope (sum of w of unclamped items).
    # Items with lo == hi never grow: they add to sum_lo and to no slope, so they make no events.
    growing = [it for it in items if it[2] < it[3]]
    points = [lo / w for _, w, lo, _ in growing]  # item starts growing
    points += [hi / w for _, w, _, hi in growing]  # item stops growing
    slopes = [w for _, w, _, _ in growing]
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
    return {name: min(max(lam * w, lo), hi) for name, w, lo, hi in items}


def subtree_demand(tree: AccountTree, leaf_demand: Mapping[str, float]) -> dict[str, float]:
    """Each account's demand: its own (leaves) or its children's summed, capped by its cap."""
    demand: dict[str, float] = {}
    children, accounts = tree.children, tree.accounts
    for name in reversed(tree.order):
        kids = children.get(name)
        d = sum(demand[k] for k in kids) if kids else float(leaf_demand.get(name, 0.0))
        cap = accounts[name].cap
        demand[name] = d if cap is None else min(d, float(cap))
    return demand


def entitlements(tree: AccountTree, capacity: float, leaf_demand: Mapping[str, float]) -> dict[str, float]:
    """Entitled slices for every account in the tree (inner accounts included).

    Accounts without demand are entitled to 0 and left out of the water-filling (their
    lo = hi = 0 would not move the water level); only inner accounts are split further."""
    demand = subtree_demand(tree, leaf_demand)
    out = dict.fromkeys(tree.order, 0.0)
    children, accounts = tree.children, tree.accounts

    def split(parent: str | None, cap: float) -> None:
        items = []
        for k in children.get(parent, ()):
            d = demand[k]
            if d > 0:
                spec = accounts[k]
                items.append((k, spec.weight, min(float(spec.guaranteed), d), d))
        out.update(water_fill(cap, items))
        for k, *_ in items:
            if children.get(k):
                split(k, out[k])

    split(None, float(capacity))
    return out
