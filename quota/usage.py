"""Usage in slice-seconds, decayed with a half-life, as Slurm's PriorityDecayHalfLife.

Invariants:
- A record of `s` slice-seconds made at time `t` is worth s * 2^(-(now - t) / half_life)
  at time `now`; records from the future count in full (no growth).
- Usage is charged to leaf accounts and summed up the tree: an account's usage
  is its own records plus all of its descendants'.
- Normalised usage divides by the decayed usage of the whole tree (Slurm's
  U = U_account / U_total), and is 0 for everyone while the tree has no usage.
Times are plain seconds (epoch floats); the clock is always passed in.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

from quota.tree import AccountTree

DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0


def decay_factor(age_s: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> float:
    if half_life_s <= 0:
        raise ValueError("half-life must be > 0")
    if age_s <= 0:
        return 1.0
    return math.pow(2.0, -age_s / half_life_s)


def decayed_usage(
    records: Iterable[tuple[str, float, float]],
    now: float,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
) -> dict[str, float]:
    """Sum (account, slice_seconds, at) records into decayed usage per account."""
    out: dict[str, float] = {}
    for account, slice_seconds, at in records:
        out[account] = out.get(account, 0.0) + slice_seconds * decay_factor(now - at, half_life_s)
    return out


def rollup(tree: AccountTree, own: Mapping[str, float]) -> dict[str, float]:
    """Each account's usage plus its descendants' (own usage of unknown accounts is ignored)."""
    total = {name: float(own.get(name, 0.0)) for name in tree.order}
    for name in reversed(tree.order):  # children come after parents in `order`
        parent = tree.accounts[name].parent
        if parent is not None:
            total[parent] += total[name]
    return total


def normalise(tree: AccountTree, rolled: Mapping[str, float]) -> dict[str, float]:
    grand = sum(rolled[n] for n in tree.kids(None))
    if grand <= 0:
        return {n: 0.0 for n in tree.order}
    return {n: rolled[n] / grand for n in tree.order}
