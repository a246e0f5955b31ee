"""Benchmark of quota.decide(): admissions per second and growth with queue length.

Not a timed test. Run with `make bench` (or `.venv/bin/python tests/perf/bench_decide.py`).
Setup: 1,000 accounts (100 institutions x 10 projects, weights 1-5), 40,000 slices
(1,250 nodes x 8 T4 GPUs x 4 slices) and n pending requests of 1, 2, 4 or 8 slices.
`--busy F` first fills the fraction F of the nodes with running 1-slice jobs (the harder
case: those jobs are placed and counted every cycle, and fewer requests can be admitted).
Reports the median of several repeats, wall and CPU time.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time

import quota as q


def build(n_pending: int, seed: int = 0, busy: float = 0.5) -> q.Snapshot:
    rng = random.Random(seed)
    specs = []
    for i in range(100):
        specs.append(q.AccountSpec(f"inst{i:03d}", weight=rng.randint(1, 5), guaranteed=100))
        for j in range(10):
            specs.append(q.AccountSpec(f"inst{i:03d}/p{j}", weight=rng.randint(1, 5), parent=f"inst{i:03d}",
                                       guaranteed=10))
    nodes = tuple(q.NodeCapacity(f"node{i:04d}", 8, 4) for i in range(1250))
    capacity = q.Capacity(nodes)
    tree = q.AccountTree.build(specs, capacity.total_slices)
    leaves = tree.leaves()
    running = []
    jid = 0
    for n in nodes[: int(len(nodes) * busy)]:  # part of the cluster busy with 1-slice jobs
        for g in range(8):
            for _ in range(4):
                running.append(q.RunningJob(f"r{jid}", rng.choice(leaves), n.name, ((g, 1),), rng.random() * 1000))
                jid += 1
    sizes = [1, 1, 1, 2, 2, 4, 8]
    pending = tuple(
        q.PendingRequest(i, rng.choice(leaves), rng.choice(sizes), seq=float(i), submitted_at=float(i))
        for i in range(n_pending)
    )
    usage = {leaf: rng.random() * 1e6 for leaf in leaves}
    return q.Snapshot(tree, capacity, pending, tuple(running), usage, now=2000.0)


def measure(n: int, repeats: int, busy: float) -> dict:
    snap = build(n, busy=busy)
    times, cpu, admitted = [], [], 0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        d = q.decide(snap)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        admitted = len(d.admissions)
    med = statistics.median(times)
    med_cpu = statistics.median(cpu)
    return {"pending": n, "admitted": admitted, "median_s": med, "median_cpu_s": med_cpu,
            "admissions_per_s": admitted / med, "admissions_per_cpu_s": admitted / med_cpu,
            "us_per_request": med / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--busy", type=float, default=0.0, help="fraction of nodes already running jobs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(int(n), args.repeats, args.busy) for n in args.sizes.split(",")]
    base = rows[0]
    for r in rows:
        scale = r["pending"] / base["pending"]
        r["cost_ratio"] = r["median_s"] / base["median_s"]
        r["n_log_n_ratio"] = scale * math.log(r["pending"]) / math.log(base["pending"])
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'pending':>8} {'admitted':>8} {'median s':>9} {'cpu s':>7} {'adm/s':>9} {'adm/cpu-s':>10} "
          f"{'us/req':>7} {'cost x':>7} {'nlogn x':>8}")
    for r in rows:
        print(f"{r['pending']:>8} {r['admitted']:>8} {r['median_s']:>9.3f} {r['median_cpu_s']:>7.3f} "
              f"{r['admissions_per_s']:>9.0f} {r['admissions_per_cpu_s']:>10.0f} "
              f"{r['us_per_request']:>7.2f} {r['cost_ratio']:>7.1f} {r['n_log_n_ratio']:>8.1f}")


if __name__ == "__main__":
    main()
