"""The scheduling loop at cluster scale: real loop, store and policy, a fake executor (no Ray).

Not a timed test. The world: `--gpus` GPUs x 4 slices on `--nodes` nodes, `--accounts`
accounts (institutions of 9 projects each), `--pending` waiting jobs of 1, 2 or 4
slices, seeded with the store's bulk insert (valid rows, as a job array makes them).
The first cycle fills the cluster and is not measured. Then every cycle, before it runs,
`--churn` running jobs finish (the FakeExecutor reports them) and as many new jobs arrive
through `services.jobs.submit_array`, the function the API's submit calls, so the
queue stays at `--pending`. Each measured cycle is one `loop.cycle()` (wall time).

Prints the cycle's p50 and p99, the garbage collector's pauses (a callback on `gc`), and
the admissions per second of loop time:
    p50 X ms
Bars (issue 15 §2): p50 <= 20 ms, p99 <= 100 ms, >= 5,000 admissions/s.

Run: .venv/bin/python tests/perf/bench_loop.py [--db sqlite|postgres] [--cycles 200] [--quick] [--profile]
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loop"))

from fake_executor import FakeExecutor

from scheduler.loop import collector
from scheduler.loop.coordinator import SchedulingLoop
from scheduler.services import accounts, capacity, jobs
from scheduler.store import Account, init_db, make_engine, session_scope
from scheduler.store.checkpoint import WalCheckpointer
from scheduler.store.transitions import submit_jobs
from workloads.measure import percentile

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HOLD = {"model": "hold", "framework": None, "mode": "train", "spec": {"seconds": 60}}
SIZES = (1, 1, 1, 2, 2, 4)
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def database(kind: str, tmp: str) -> tuple[str, object]:
    """A fresh database URL and a function that drops it afterwards."""
    if kind == "sqlite":
        return f"sqlite:///{tmp}/loop.db", lambda: None
    import sqlalchemy as sa
    name = f"bench_loop_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop


def seed(url: str, gpus: int, nodes: int, n_accounts: int, pending: int, rng: random.Random):
    engine = make_engine(url)
    init_db(engine)
    leaves = []
    with session_scope(engine) as s:
        per_node = gpus // nodes
        for i in range(nodes):
            capacity.set_node(s, node=f"node{i:03d}", gpus=per_node, slices_per_gpu=4, gpu_type="T4", at=T0,
                              check_guarantees=False)
        n_inst = max(1, n_accounts // 10)
        for i in range(n_inst):
            accounts.add_account(s, f"inst{i:02d}", weight=rng.randint(1, 5))
            for j in range(n_accounts // n_inst - 1):
                name = f"inst{i:02d}/p{j}"
                accounts.add_account(s, name, weight=rng.randint(1, 5), parent=f"inst{i:02d}")
                leaves.append(name)
    with session_scope(engine) as s:
        ids = {a.name: a.id for a in s.exec(Account.__table__.select()).all()}
        left = pending
        while left > 0:  # bulk insert for the seed: rows as a job array makes them
            name, k = rng.choice(leaves), rng.choice(SIZES)
            n = min(left, rng.randint(50, 500))
            submit_jobs(s, count=n, account_id=ids[name], slices=k, at=T0 - timedelta(hours=1), **HOLD)
            left -= n
    return engine, leaves


def run(args) -> dict:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = database(args.db, tmp)
        try:
            checkpointer = None
            t = time.perf_counter()
            engine, leaves = seed(url, args.gpus, args.nodes, args.accounts, args.pending, rng)
            seeded_s = time.perf_counter() - t
            now = [T0]
            ex = FakeExecutor(f"{tmp}/results")
            if args.as_server:  # the process settings `fairgpu up` makes beside its loop
                collector.tune()
                checkpointer = WalCheckpointer.for_engine(engine)
                if checkpointer is not None:
                    checkpointer.start()
            loop = SchedulingLoop(engine, ex, lambda: now[0], discover=False, usage_period_s=1e9)
            t = time.perf_counter()
            first = loop.cycle()
            first_s = time.perf_counter() - t
            times, cpu, gcs, admitted, phases = [], [], [], 0, []
            gc_s = [0.0]  # the collector's pauses during measured cycles (the heap holds every waiting job)
            gc_start = [0.0]

            def on_gc(phase: str, _info: dict) -> None:
                if phase == "start":
                    gc_start[0] = time.perf_counter()
                else:
                    gc_s[0] += time.perf_counter() - gc_start[0]
            gc.callbacks.append(on_gc)
            prof = None
            if args.profile:
                import cProfile
                prof = cProfile.Profile()
            for _ in range(args.cycles):
                now[0] += timedelta(milliseconds=50)
                running = list(ex.attempts)
                for job_id in rng.sample(running, min(args.churn, len(running))):
                    ex.finish(job_id)
                arrivals = args.churn
                with session_scope(engine) as s:
                    while arrivals > 0:
                        n = min(arrivals, rng.randint(1, 20))
                        jobs.submit_array(s, count=n, account=rng.choice(leaves), slices=rng.choice(SIZES),
                                          at=now[0], **HOLD)
                        arrivals -= n
                if prof is not None:
                    prof.enable()
                gc_before = gc_s[0]  # the pauses inside the cycle only (not the arrivals' submits)
                t, c = time.perf_counter(), time.thread_time()
                report = loop.cycle()
                times.append(time.perf_counter() - t)
                cpu.append(time.thread_time() - c)
                gcs.append(gc_s[0] - gc_before)
                if prof is not None:
                    prof.disable()
                admitted += report.admitted
                phases.append(report.phases)
            gc.callbacks.remove(on_gc)
            if prof is not None:
                import pstats
                pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "cumtime")).print_stats(int(os.environ.get("BENCH_ROWS", "35")))
            if checkpointer is not None:
                checkpointer.stop()
            engine.dispose()
        finally:
            drop()
    med = {k: 1000 * statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
    return {"seed_s": seeded_s, "first_cycle_s": first_s, "first_admitted": first.admitted,
            "p50_ms": 1000 * percentile(times, 50), "p99_ms": 1000 * percentile(times, 99), "admitted": admitted,
            "cpu_p50_ms": 1000 * statistics.median(cpu), "gc_ms_per_cycle": 1000 * statistics.mean(gcs),
            "admissions_per_s": admitted / sum(times), "phases_ms": med}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=125)
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--pending", type=int, default=100_000)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--churn", type=int, default=100, help="jobs finishing (and arriving) before each cycle")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a small smoke run (40 GPUs, 2,000 pending, 20 cycles)")
    ap.add_argument("--profile", action="store_true", help="cProfile the measured cycles")
    ap.add_argument("--bare", dest="as_server", action="store_false",
                    help="without the server's process settings (scheduler.loop.collector, the WAL checkpointer)")
    args = ap.parse_args(argv)
    if args.quick:
        args.gpus, args.nodes, args.accounts, args.pending, args.cycles, args.churn = 40, 5, 20, 2000, 20, 10
    r = run(args)
    print(f"{args.db}: {args.gpus} GPUs ({4 * args.gpus} slices) on {args.nodes} nodes, {args.accounts} accounts, "
          f"{args.pending} pending, churn {args.churn}/cycle, {args.cycles} cycles "
          f"(seeded in {r['seed_s']:.1f} s; first cycle {1000 * r['first_cycle_s']:.0f} ms, "
          f"{r['first_admitted']} admitted; "
          + ("as the server runs it: gc thresholds %s, WAL checkpointer" % (gc.get_threshold(),) if args.as_server
             else "bare: default gc thresholds, no WAL checkpointer") + ")")
    print(f"p50 {r['p50_ms']:.1f} ms")
    print(f"p99 {r['p99_ms']:.1f} ms")
    print(f"cpu p50 {r['cpu_p50_ms']:.1f} ms (the loop thread's CPU time: less sensitive to a shared machine)")
    print(f"gc {r['gc_ms_per_cycle']:.1f} ms per cycle on average (the garbage collector's pauses, included above)")
    print(f"admissions/s {r['admissions_per_s']:.0f} ({r['admitted']} admitted)")
    print("phases (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases_ms"].items()))
    return r


if __name__ == "__main__":
    main()
