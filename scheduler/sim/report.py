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

What-if on the live tree (`fairgpu simulate --from-db`): `actual` is what really happened
(scheduler.sim.history.actual_metrics), shown as a first row and JSON key beside the
simulated runs, measured with the same definitions; `institution_comparison` puts each
institution's real and simulated waits and contended share side by side.
"""
from __future__ import annotations

from dataclasses import replace

from quota import AccountTree, Capacity, PolicyConfig
from scheduler.sim.engine import SimOptions, SimResult, simulate
from scheduler.sim.metrics import RunMetrics
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
# The table's rows keep times exact, in seconds (`*_s`); the CLI writes them as durations.
TABLE_COLUMNS = ["policy", "jain_index", "max_share_deviation", "mean_jct_s", "makespan_s", "utilisation",
                 "max_rho", "wait_p95_s", "preemptions", "unfinished", "wall_s"]


def configs_for(policies: list[str] | None = None, algorithm: str | None = None) -> dict[str, PolicyConfig]:
    names = policies or list(POLICIES)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r} (choose {', '.join(POLICIES)})")
    return {n: POLICIES[n] if algorithm is None else replace(POLICIES[n], algorithm=algorithm) for n in names}


def run_configs(trace: Trace, tree: AccountTree, capacity: Capacity, configs: dict[str, PolicyConfig],
                options: SimOptions | None = None, progress=None) -> dict[str, SimResult]:
    """One simulated run per named PolicyConfig, in order."""
    options = options or SimOptions()
    out = {}
    for name, cfg in configs.items():
        out[name] = simulate(trace, tree, capacity, cfg, name=name, options=options)
        if progress:
            progress(out[name])
    return out


def compare(trace: Trace, tree: AccountTree, capacity: Capacity, policies: list[str] | None = None,
            options: SimOptions | None = None, algorithm: str | None = None,
            progress=None) -> dict[str, SimResult]:
    return run_configs(trace, tree, capacity, configs_for(policies, algorithm), options, progress)


def to_json(results: dict[str, SimResult], actual: RunMetrics | None = None,
            slice_hours: dict[str, float] | None = None) -> dict:
    """An object keyed by policy name; per-institution waits and rho under `institutions`.
    With `actual`, what really happened comes first under "actual", with the same keys
    (events, cycles and the timings are null: nothing was simulated), and each institution's
    real slice-hours under `institutions`."""
    out = {}
    if actual is not None:
        entry = {k: getattr(actual, k) for k in JSON_KEYS}
        entry.update(jobs=actual.jobs, unfinished=actual.unfinished, preemptions=actual.preemptions,
                     contended_fraction=actual.contended_fraction, events=None, cycles=None, skipped_cycles=None,
                     wall_s=None, events_per_s=None,
                     institutions={i: {**p, "slice_hours": (slice_hours or {}).get(i, 0.0)}
                                   for i, p in actual.per_institution.items()})
        out["actual"] = entry
    for name, r in results.items():
        m = r.metrics
        entry = {k: getattr(m, k) for k in JSON_KEYS}
        entry.update(jobs=m.jobs, unfinished=m.unfinished, preemptions=m.preemptions, contended_fraction=m.contended_fraction,
                     events=r.events, cycles=r.cycles, skipped_cycles=r.skipped_cycles, wall_s=r.wall_s,
                     events_per_s=r.events_per_s, institutions=m.per_institution)
        out[name] = entry
    return out


def _row(name: str, m: RunMetrics, wall_s: float | None) -> dict:
    return {"policy": name, "jain_index": round(m.jain_index, 4), "max_share_deviation": round(m.max_share_deviation, 4),
            "mean_jct_s": m.mean_jct_s, "makespan_s": m.makespan_s,
            "utilisation": round(m.utilisation, 3), "max_rho": round(m.max_rho, 2),
            "wait_p95_s": m.wait_p95_s, "preemptions": m.preemptions, "unfinished": m.unfinished,
            "wall_s": None if wall_s is None else round(wall_s, 1)}


def table_rows(results: dict[str, SimResult], actual: RunMetrics | None = None) -> list[dict]:
    """One row per run; with `actual`, what really happened first (policy "actual")."""
    rows = [_row("actual", actual, None)] if actual is not None else []
    return rows + [_row(name, r.metrics, r.wall_s) for name, r in results.items()]


def institution_rows(results: dict[str, SimResult], top: int = 10) -> list[dict]:
    """Wait (p50, p95) in seconds per institution and policy, for the largest `top`."""
    first = next(iter(results.values())).metrics.per_institution
    biggest = sorted(first, key=lambda i: (-first[i]["jobs"], i))[:top]
    rows = []
    for inst in biggest:
        row = {"institution": inst, "jobs": first[inst]["jobs"]}
        for name, r in results.items():
            p = r.metrics.per_institution.get(inst, {})
            row[f"{name} p50/p95"] = (p.get("wait_p50_s", 0.0), p.get("wait_p95_s", 0.0)) if p else None
        rows.append(row)
    return rows


def institution_comparison(results: dict[str, SimResult], actual: RunMetrics, slice_hours: dict[str, float],
                           top: int = 20) -> list[dict]:
    """Per institution (the largest `top` by real slice-hours): its real slice-hours, then
    wait (p50, p95) in seconds and contended share ratio (slice-time over entitled
    slice-time; None outside contention), really and in each simulated run."""
    def cells(p: dict | None) -> tuple[tuple[float, float] | None, float | None]:
        if not p:
            return None, None
        return (p["wait_p50_s"], p["wait_p95_s"]), p.get("share_ratio")

    insts = sorted(actual.per_institution, key=lambda i: (-slice_hours.get(i, 0.0), i))[:top]
    rows = []
    for inst in insts:
        row = {"institution": inst, "jobs": actual.per_institution[inst]["jobs"],
               "slice_h": slice_hours.get(inst, 0.0)}
        row["actual p50/p95"], row["actual share"] = cells(actual.per_institution[inst])
        for name, r in results.items():
            row[f"{name} p50/p95"], row[f"{name} share"] = cells(r.metrics.per_institution.get(inst))
        rows.append(row)
    return rows
