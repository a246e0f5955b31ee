"""The scheduling loop's cost per cycle when nothing can be admitted (not a timed test).

A full cluster (8 slices, 8 running jobs) and N pending jobs on SQLite: each cycle still
loads, decides and checks every waiting job's reason. This is the fixed cost every cycle
pays on top of its admissions and completions. No Ray is needed: with nothing to start
or collect the executor is never called.

Run: .venv/bin/python tests/perf/bench_cycle.py [--pending 500] [--cycles 200] [--profile]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scheduler.runtime.executor import RayExecutor  # noqa: E402
from scheduler.loop.coordinator import SchedulingLoop  # noqa: E402
from scheduler.services import accounts, capacity, jobs  # noqa: E402
from scheduler.services.snapshot import active_jobs  # noqa: E402
from scheduler.store import init_db, make_engine, session_scope  # noqa: E402
from scheduler import apply  # noqa: E402

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
HOLD = dict(model="hold", framework=None, mode="train", slices=1, spec={"seconds": 0})


def setup(url: str, pending: int):
    engine = make_engine(url)
    init_db(engine)
    with session_scope(engine) as s:
        capacity.set_node(s, node="n1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=T0)
        for name, w in (("a", 1), ("b", 2), ("c", 3)):
            accounts.add_account(s, name, weight=w)
    with session_scope(engine) as s:
        running = jobs.submit_array(s, count=8, account="a", at=T0, **HOLD)
        rows = {r.id: r for r in active_jobs(s, running)}
        apply.admit_many(s, [(rows[i], "n1", [(i % 2, 1)]) for i in running], at=T0)
        for k, name in enumerate(("a", "b", "c")):
            left = pending // 3 + (1 if k < pending % 3 else 0)
            while left > 0:  # arrays hold at most 1,000 jobs
                jobs.submit_array(s, count=min(left, 1000), account=name, at=T0, **HOLD)
                left -= min(left, 1000)
    return engine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pending", type=int, default=500)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = setup(f"sqlite:///{tmp}/c.db", args.pending)
        loop = SchedulingLoop(engine, RayExecutor(None, f"{tmp}/results"), lambda: T0, slices_per_gpu=4,
                              discover=False, usage_period_s=1e9)
        loop.cycle()  # the first load reads everything
        if args.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.enable()
        times, phases = [], []
        for _ in range(args.cycles):
            c = time.thread_time()
            report = loop.cycle()
            times.append(time.thread_time() - c)
            phases.append(report.phases)
            assert report.admitted == 0
        if args.profile:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        med = {k: 1000 * statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
        print(f"{args.pending} pending, full cluster: cycle CPU median {1000 * statistics.median(times):.2f} ms, "
              f"min {1000 * min(times):.2f} ms; phases (wall, median ms): "
              + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
        engine.dispose()


if __name__ == "__main__":
    main()
