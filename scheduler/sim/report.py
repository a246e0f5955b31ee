"""Five policies on one trace, side by side.

POLICIES maps each report name to the quota.PolicyConfig that gives it:
- fifo: ordering "fifo", no quotas and no preemption (what Ray alone gives);
- static: ordering "static", each institution held to its weighted share of the whole
  cluster (no borrowing), reclaim up to the guarantee;
- fair-share-no-history: weighted fair share, ordering by share alone (use_history=False);
- fair-share: weighted fair share ordered with decayed usage (the default);
- finish-time: the Themis-style ordering, largest finish-time fairness ratio first.
Every policy runs on its own PolicyState; the trace, tree and cluster are shared and
never mutated, so the runs are independent and deterministic.
"""
from __future__ import annotations

from dataclasses import replace

from quota import AccountTree, Capacity, PolicyConfig
from scheduler.sim.engine import SimOptions, SimResult, simulate
from scheduler.sim.trace import Trace

POLICIES: dict[str, PolicyConfig] = {
    "fifo": PolicyConfig(ordering="fifo", preemption=False),
    "static": PolicyConfig(ordering="static"),
    "fair-share-no-history": PolicyConfig(ordering="fair-share", use_history=False),
    "fair-share": PolicyConfig(ordering="fair-share", use_history=True),
    "finish-time": PolicyConfig(ordering="finish-time"),
}
JSON_KEYS = ("jain_index", "max_share_deviation", "mean_jct_s", "makespan_s", "utilisation", "max_rho",
             "wait_p50_s", "wait_p95_s")
TABLE_COLUMNS = ["policy", "jain_index", "max_share_deviation", "mean_jct_h", "makespan_d", "utilisation",
                 "max_rho", "wait_p95_h", "preemptions", "unfinished", "wall_s"]


def compare(trace: Trace, tree: AccountTree, capacity: Capacity, policies: list[str] | None = None,
            options: SimOptions = SimOptions(), algorithm: str | None = None,
            progress=None) -> dict[str, SimResult]:
    names = policies or list(POLICIES)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r} (choose {', '.join(POLICIES)})")
    out = {}
    for name in names:
        cfg = POLICIES[name] if algorithm is None else replace(POLICIES[name], algorithm=algorithm)
        out[name] = simulate(trace, tree, capacity, cfg, name=name, options=options)
        if progress:
            progress(out[name])
    return out


def to_json(results: dict[str, SimResult]) -> dict:
    """An object keyed by policy name; per-institution waits and rho under `institutions`."""
    out = {}
    for name, r in results.items():
        m = r.metrics
        entry = {k: getattr(m, k) for k in JSON_KEYS}
        entry.update(jobs=m.jobs, unfinished=m.unfinished, preemptions=m.preemptions, contended_fraction=m.contended_fraction,
                     events=r.events, cycles=r.cycles, skipped_cycles=r.skipped_cycles, wall_s=r.wall_s,
                     events_per_s=r.events_per_s, institutions=m.per_institution)
        out[name] = entry
    return out


def table_rows(results: dict[str, SimResult]) -> list[dict]:
    rows = []
    for name, r in results.items():
        m = r.metrics
        rows.append({"policy": name, "jain_index": round(m.jain_index, 4),
                     "max_share_deviation": round(m.max_share_deviation, 4),
                     "mean_jct_h": round(m.mean_jct_s / 3600, 2), "makespan_d": round(m.makespan_s / 86400, 2),
                     "utilisation": round(m.utilisation, 3), "max_rho": round(m.max_rho, 2),
                     "wait_p95_h": round(m.wait_p95_s / 3600, 2), "preemptions": m.preemptions,
                     "unfinished": m.unfinished,
                     "wall_s": round(r.wall_s, 1)})
    return rows


def institution_rows(results: dict[str, SimResult], top: int = 10) -> list[dict]:
    """Wait p50/p95 (hours) and share ratio per institution and policy, for the largest `top`."""
    first = next(iter(results.values())).metrics.per_institution
    biggest = sorted(first, key=lambda i: (-first[i]["jobs"], i))[:top]
    rows = []
    for inst in biggest:
        row = {"institution": inst, "jobs": first[inst]["jobs"]}
        for name, r in results.items():
            p = r.metrics.per_institution.get(inst, {})
            row[f"{name} p50/p95 h"] = (f"{p.get('wait_p50_s', 0) / 3600:.2f}/{p.get('wait_p95_s', 0) / 3600:.2f}"
                                        if p else "-")
        rows.append(row)
    return rows
