"""Scale benchmark of `fairgpu simulate`: a month-long synthetic trace on 1,000 GPUs.

Not a timed test. Run it on one core, several times, and quote the median:

    taskset -c 0 .venv/bin/python tests/perf/bench_simulate.py --repeats 3

Setup: 100,000 jobs over 30 days from 100 institutions (Zipf sizes, diurnal arrivals,
log-normal run times, offered load 0.9) on 125 nodes x 8 T4 GPUs x 4 slices = 4,000
slices, seed 0. Each repeat simulates the default policy (weighted fair share with
decayed usage) end to end and reports events (job arrivals + job ends), policy cycles
run and skipped, wall and CPU seconds, and events per second. `--policies all` also
times the other four policies once each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from scheduler.sim.engine import SimOptions, simulate
from scheduler.sim.report import POLICIES
from scheduler.sim.synthetic import synthetic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", default="fair-share", help="comma-separated names, or 'all'")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    trace = synthetic(jobs=args.jobs, days=args.days, institutions=100, gpus=1000, slices_per_gpu=4, seed=0)
    gen_s = time.perf_counter() - t0
    tree = trace.default_tree()
    names = list(POLICIES) if args.policies == "all" else args.policies.split(",")
    rows = []
    for name in names:
        runs = [simulate(trace, tree, trace.capacity, POLICIES[name], name=name, options=SimOptions())
                for _ in range(args.repeats if name == "fair-share" else 1)]
        wall = statistics.median(r.wall_s for r in runs)
        cpu = statistics.median(r.cpu_s for r in runs)
        r = runs[0]
        rows.append({"policy": name, "jobs": r.metrics.jobs, "events": r.events, "cycles": r.cycles,
                     "skipped_cycles": r.skipped_cycles, "repeats": len(runs), "median_wall_s": wall,
                     "median_cpu_s": cpu, "events_per_s": r.events / wall, "all_wall_s": [x.wall_s for x in runs]})
    meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "cpus_allowed": len(os.sched_getaffinity(0)), "load_avg": os.getloadavg(), "trace_gen_s": gen_s,
            "slices": trace.capacity.total_slices}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(f"trace: {len(trace.jobs)} jobs, {meta['slices']} slices, generated in {gen_s:.1f} s; "
          f"cores allowed {meta['cpus_allowed']}, load average {meta['load_avg'][0]:.1f}")
    print(f"{'policy':<22} {'jobs':>7} {'events':>7} {'cycles':>7} {'skipped':>7} {'wall s':>7} {'cpu s':>7} "
          f"{'events/s':>9}")
    for r in rows:
        print(f"{r['policy']:<22} {r['jobs']:>7} {r['events']:>7} {r['cycles']:>7} {r['skipped_cycles']:>7} "
              f"{r['median_wall_s']:>7.1f} {r['median_cpu_s']:>7.1f} {r['events_per_s']:>9.0f}")


if __name__ == "__main__":
    main()
