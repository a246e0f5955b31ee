"""Who got what while everyone was waiting: shares of slice-time over a contended window.

Given finished job intervals, the contended window runs from the first start to the
moment the first account ran out of waiting work (its last start): inside it, every
account always had jobs queued, so each share can be held against its entitlement.
Pure functions over plain data; used by the demo, the fairness benchmark and tests.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping

import quota
from workloads.measure import percentile


@dataclass(frozen=True)
class Interval:
    account: str
    slices: int
    submitted: float
    start: float
    end: float


@dataclass(frozen=True)
class ContentionSummary:
    window: tuple[float, float]
    share: dict[str, float]  # fraction of the slice-time used in the window
    entitled: dict[str, float]  # fraction owed (weights among accounts with demand)
    jain_index: float
    max_deviation: float  # largest |share - entitled|, in fractions
    utilisation: float  # used slice-time / (capacity * window)
    wait_p50_s: dict[str, float | None]  # None: the account started no job
    wait_p95_s: dict[str, float | None]
    ray_start_delay_p50_s: float | None = None
    ray_start_delay_max_s: float | None = None


def contended_window(intervals: Iterable[Interval]) -> tuple[float, float]:
    rows = list(intervals)
    if not rows:
        return (0.0, 0.0)
    start = min(r.start for r in rows)
    last_start = {}
    for r in rows:
        last_start[r.account] = max(last_start.get(r.account, r.start), r.start)
    return start, min(last_start.values())


def slice_time(intervals: Iterable[Interval], window: tuple[float, float]) -> dict[str, float]:
    lo, hi = window
    out: dict[str, float] = {}
    for r in intervals:
        overlap = max(0.0, min(r.end, hi) - max(r.start, lo))
        out[r.account] = out.get(r.account, 0.0) + overlap * r.slices
    return out


def summarise(intervals: Iterable[Interval], weights: Mapping[str, float], capacity: int,
              delays: list[float] | None = None) -> ContentionSummary:
    rows = list(intervals)
    window = contended_window(rows)
    used = slice_time(rows, window)
    total = sum(used.values())
    wsum = sum(weights.values())
    share = {a: (used.get(a, 0.0) / total if total else 0.0) for a in weights}
    entitled = {a: w / wsum for a, w in weights.items()}
    jain = quota.jain_of_shares(share, entitled)
    dev = max(abs(share[a] - entitled[a]) for a in weights) if weights else 0.0
    span = window[1] - window[0]
    util = total / (capacity * span) if span > 0 and capacity else 0.0
    waits: dict[str, list[float]] = {a: [] for a in weights}
    for r in rows:
        waits.setdefault(r.account, []).append(r.start - r.submitted)
    return ContentionSummary(
        window=window, share=share, entitled=entitled, jain_index=jain, max_deviation=dev, utilisation=util,
        wait_p50_s={a: percentile(w, 50) for a, w in waits.items()},
        wait_p95_s={a: percentile(w, 95) for a, w in waits.items()},
        ray_start_delay_p50_s=statistics.median(delays) if delays else None,
        ray_start_delay_max_s=max(delays) if delays else None,
    )
