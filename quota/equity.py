"""Equity measures over accounts that have demand.

- Jain's index J = (sum x)^2 / (n * sum x^2) with x_i = actual share / entitled share;
  1 is perfectly fair, 1/n is one account taking everything. Accounts with no
  entitlement (no demand) are left out; with no such accounts J = 1.
- Share deviation: actual share - entitled share, both as fractions of capacity.
- Gini coefficient of normalised usage per unit of normalised shares (U/S), so a
  tree whose usage follows its weights exactly scores 0 whatever the weights.

Both indices are scale-free, so when the values are so far apart that a sum or a square
leaves the float range (a tiny entitlement or share beside a large one, which extreme
but valid weights give), they are computed on the values divided by the largest (an
infinite value counting as 1 and every finite one as 0). The results stay finite:
J in [1/n, 1], Gini in [0, 1).

`cluster_equity(figures)` gives the three over the institutions (top-level accounts) of one
`quota.report`: J over those with an entitlement, the largest |share_got - share_owed|,
and the Gini of their normalised usage per normalised share. The /metrics gauges read
it; nothing else recomputes them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from quota.report import AccountFigures


def jain_index(values: list[float]) -> float:
    if not values:
        return 1.0
    s = sum(values)
    sq = sum(v * v for v in values)
    if sq == 0 and not any(values):
        return 1.0
    j = s * s / (len(values) * sq) if sq > 0 else math.inf
    if math.isfinite(j):
        return j
    xs = _scaled(values)  # a square overflowed or underflowed: J is the same for the values scaled
    sq_xs = sum(x * x for x in xs)
    return sum(xs) ** 2 / (len(xs) * sq_xs)


def _scaled(values: list[float]) -> list[float]:
    """The values divided by the largest magnitude (an infinite one counts 1, the rest 0)."""
    top = max(abs(v) for v in values)
    if math.isinf(top):
        return [1.0 if math.isinf(v) else 0.0 for v in values]
    return [v / top for v in values]


def share_ratios(actual: Mapping[str, float], entitled: Mapping[str, float]) -> dict[str, float]:
    return {a: actual.get(a, 0.0) / e for a, e in entitled.items() if e > 0}


def jain_of_shares(actual: Mapping[str, float], entitled: Mapping[str, float]) -> float:
    return jain_index(list(share_ratios(actual, entitled).values()))


def share_deviation(actual: Mapping[str, float], entitled: Mapping[str, float], capacity: float) -> dict[str, float]:
    if capacity <= 0:
        return {a: 0.0 for a in entitled}
    return {a: (actual.get(a, 0.0) - e) / capacity for a, e in entitled.items()}


def gini(values: list[float]) -> float:
    xs = sorted(v for v in values if v >= 0)
    n = len(xs)
    total = sum(xs)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    if not (math.isfinite(2 * weighted) and math.isfinite(n * total)):  # overflowed: the Gini is the same scaled
        xs = _scaled(xs)
        total = sum(xs)
        weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return (2 * weighted) / (n * total) - (n + 1) / n


def usage_gini(norm_usage: Mapping[str, float], norm_shares: Mapping[str, float]) -> float:
    return gini([norm_usage.get(a, 0.0) / s for a, s in norm_shares.items() if s > 0])


class Equity(NamedTuple):
    jain_index: float  # of allocated / entitled slices, over institutions with an entitlement
    max_share_deviation: float  # largest |allocated - entitled| over them, as a fraction of capacity
    usage_gini: float  # of normalised usage per normalised share, over every institution


def cluster_equity(figures: Iterable[AccountFigures]) -> Equity:
    """The cluster's equity measures over the institutions among `figures` (quota.report)."""
    top = [f for f in figures if f.parent is None]
    owed = [f for f in top if f.entitled_slices > 0]
    jain = jain_index([f.allocated_slices / f.entitled_slices for f in owed])
    dev = max((abs(f.share_got - f.share_owed) for f in owed), default=0.0)
    gini_ = usage_gini({f.name: f.norm_usage for f in top}, {f.name: f.norm_shares for f in top})
    return Equity(jain, dev, gini_)
