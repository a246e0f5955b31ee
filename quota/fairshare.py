"""Fair-share factors: Slurm's classic algorithm and Fair Tree ranking.

Classic (SchedMD, doc/html/classic_fair_share.shtml), for every account:
- S, the normalised shares: (w / sum of sibling weights) * S_parent; top level w / sum(top weights).
- U, the normalised usage: decayed usage of the account's subtree / decayed usage of the tree.
- U_E, the effective usage: U for the tier under the root; below it
  U_E = U + (U_E,parent - U) * (w / sum of sibling weights).
- F = 2^(-U_E / S), in [0, 1]; F = 1 with no usage at all.

Extreme but valid weights (quota.limits: 0.001 beside 1000 at every level of a deep tree)
make S smaller than the smallest normal float, or 0 once it underflows. Such an S is
never divided by: its F comes from log2 S, the sum of log2(w / sum sibling weights) down
the path, as F = 2^(-2^(log2 U_E - log2 S)). And F itself underflows to 0.0 once
U_E / S passes about 1075; accounts at F = 0 then tie, and the order of admission breaks
the tie by share of entitlement (quota.ordering). Every factor is finite, in [0, 1].

Fair Tree (SchedMD, doc/html/fair_tree.shtml): at every level siblings are sorted by
Level FS = S_level / U_level (S_level = w / sum sibling weights, U_level = usage /
sum sibling usage; infinite without usage), descending, depth first. Leaves are
ranked in that order; F = rank / n with the first of n leaves at rank n, and leaves
whose Level FS paths are equal share a rank. An inner account gets the F of its
best-ranked leaf.

Both are pure functions of the tree and the decayed usage; neither reads a clock.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Mapping

from quota.tree import AccountTree
from quota.usage import normalise, rollup

CLASSIC = "classic"
FAIR_TREE = "fair-tree"
ALGORITHMS = (CLASSIC, FAIR_TREE)

MIN_NORMAL = sys.float_info.min  # below it a float loses precision, then underflows to 0


@dataclass(frozen=True)
class ShareFactors:
    norm_shares: dict[str, float]
    raw_usage: dict[str, float]  # decayed, rolled up the tree
    norm_usage: dict[str, float]
    effective_usage: dict[str, float]
    level_fs: dict[str, float]
    factor: dict[str, float]


def norm_shares(tree: AccountTree) -> dict[str, float]:
    sibling_weight = _sibling_weights(tree)
    out: dict[str, float] = {}
    for name in tree.order:
        spec = tree.accounts[name]
        parent_share = 1.0 if spec.parent is None else out[spec.parent]
        out[name] = spec.weight / sibling_weight[spec.parent] * parent_share
    return out


def _sibling_weights(tree: AccountTree) -> dict[str | None, float]:
    """The summed weight of each parent's children (None: the top level). O(accounts)."""
    return {parent: sum(tree.accounts[k].weight for k in kids) for parent, kids in tree.children.items()}


@dataclass(frozen=True)
class TreeShares:
    """What the factors need from the tree alone, computed once per tree (O(accounts)).

    The scheduler and the simulator keep one across cycles (quota.state.PolicyState);
    `compute` builds one when it is not given."""

    norm_shares: dict[str, float]
    sibling_ratio: dict[str, float]  # w / sum of sibling weights
    # log2 S of the accounts whose S is below MIN_NORMAL (usually none): their F is taken from it
    tiny_log2: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, tree: AccountTree) -> "TreeShares":
        sw = _sibling_weights(tree)
        ratio = {n: tree.accounts[n].weight / sw[tree.accounts[n].parent] for n in tree.order}
        norm = norm_shares(tree)
        tiny: dict[str, float] = {}
        if any(s < MIN_NORMAL for s in norm.values()):
            log2s: dict[str, float] = {}
            for n in tree.order:
                parent = tree.accounts[n].parent
                r = ratio[n]
                log2s[n] = (math.log2(r) if r > 0 else -math.inf) + (0.0 if parent is None else log2s[parent])
            tiny = {n: log2s[n] for n in tree.order if norm[n] < MIN_NORMAL}
        return cls(norm, ratio, tiny)


def compute(tree: AccountTree, own_usage: Mapping[str, float], algorithm: str = CLASSIC,
            shares: TreeShares | None = None) -> ShareFactors:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown fair-share algorithm {algorithm!r} (choose {', '.join(ALGORITHMS)})")
    if shares is None:
        shares = TreeShares.of(tree)
    raw = rollup(tree, own_usage)
    norm = normalise(tree, raw)
    effective = _effective(tree, norm, shares)
    level = _level_fs(tree, raw)
    factor = _classic(tree, effective, shares) if algorithm == CLASSIC else _fair_tree_factor(tree, level)
    return ShareFactors(dict(shares.norm_shares), raw, norm, effective, level, factor)


def factors(tree: AccountTree, own_usage: Mapping[str, float], algorithm: str, shares: TreeShares) -> dict[str, float]:
    """`compute(...).factor` alone, without the figures the factor does not need (the
    policy's per-cycle path: the same code, so the same floats)."""
    raw = rollup(tree, own_usage)
    if algorithm == CLASSIC:
        return _classic(tree, _effective(tree, normalise(tree, raw), shares), shares)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown fair-share algorithm {algorithm!r} (choose {', '.join(ALGORITHMS)})")
    return _fair_tree_factor(tree, _level_fs(tree, raw))


def _effective(tree: AccountTree, norm: Mapping[str, float], shares: TreeShares) -> dict[str, float]:
    ratio = shares.sibling_ratio
    effective: dict[str, float] = {}
    accounts = tree.accounts
    for name in tree.order:
        parent = accounts[name].parent
        u = norm[name]
        if parent is None:
            effective[name] = u
        else:
            effective[name] = u + (effective[parent] - u) * ratio[name]
    return effective


def _classic(tree: AccountTree, effective: Mapping[str, float], shares: TreeShares) -> dict[str, float]:
    pow_ = math.pow
    norm_s = shares.norm_shares
    tiny = shares.tiny_log2
    if not tiny:
        return {n: pow_(2.0, -effective[n] / norm_s[n]) for n in tree.order}
    return {n: _factor_of_log2(effective[n], tiny[n]) if n in tiny
            else pow_(2.0, -effective[n] / norm_s[n]) for n in tree.order}


def _factor_of_log2(u_e: float, log2_s: float) -> float:
    """F = 2^(-U_E / S) for an S below MIN_NORMAL, from log2 S (no division by S)."""
    if u_e <= 0:
        return 1.0
    exponent = math.log2(u_e) - log2_s  # log2(U_E / S)
    if exponent > 11:  # U_E / S > 2048: F is below the smallest float
        return 0.0
    return math.pow(2.0, -math.pow(2.0, exponent))


def _level_fs(tree: AccountTree, raw: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for parent, kids in tree.children.items():
        w_total = sum(tree.accounts[k].weight for k in kids)
        u_total = sum(raw[k] for k in kids)
        for k in kids:
            s = tree.accounts[k].weight / w_total
            u = raw[k] / u_total if u_total > 0 else 0.0
            out[k] = math.inf if u == 0 else s / u
    return out


def _fair_tree_factor(tree: AccountTree, level: Mapping[str, float]) -> dict[str, float]:
    ranked: list[tuple[tuple[float, ...], str]] = []

    def visit(parent: str | None, path: tuple[float, ...]) -> None:
        kids = sorted(tree.kids(parent), key=lambda k: (-level[k], k))
        for k in kids:
            key = path + (-level[k],)
            if tree.is_leaf(k):
                ranked.append((key, k))
            else:
                visit(k, key)

    visit(None, ())
    n = len(ranked)
    factor: dict[str, float] = {}
    first_of_group = 0
    for i, (key, name) in enumerate(ranked):
        if i > 0 and key != ranked[i - 1][0]:
            first_of_group = i
        factor[name] = (n - first_of_group) / n if n else 1.0
    for name in reversed(tree.order):
        if name not in factor:
            factor[name] = max(factor[k] for k in tree.kids(name))
    return factor
