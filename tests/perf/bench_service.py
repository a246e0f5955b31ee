"""Service benchmarks, each beside plain Ray in the same run (not timed tests).

  fairness: institutions weighted 1:2:3 saturate 8 slices (2 logical T4 GPUs) with equal
            short `hold` jobs; shares of slice-time over the contended window against
            1/6, 2/6, 3/6, Jain's index and slice utilisation. Beside it: the same job
            stream submitted straight to Ray (num_gpus=0.25 each), no fairgpu.
  overhead: 500 zero-length jobs through fairgpu (API, database, scheduling loop, Ray)
            against the same 500 as plain Ray tasks of the same shape; wall time from the
            first submission to the last completion. fairgpu runs twice: each job its own
            POST (3 client threads), and each client's jobs as one job array (`count`;
            still 500 jobs, each scheduled, started, recorded and fenced on its own).

Run: .venv/bin/python tests/perf/bench_service.py fairness|overhead|all [--json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scheduler.contention import Interval, summarise  # noqa: E402
from scheduler.demo import INSTITUTIONS, flood, free_port, job_intervals, setup_accounts  # noqa: E402

WEIGHTS = dict(INSTITUTIONS)
GPUS, SPG = 2, 4


def job_stream(per_weight: int, seconds: float) -> list[tuple[str, float]]:
    """The arrival order: each institution's client submits its jobs at once; interleaved."""
    queues = {name: [(name, seconds)] * int(per_weight * w) for name, w in INSTITUTIONS}
    out = []
    while any(queues.values()):
        for name in queues:
            if queues[name]:
                out.append(queues[name].pop())
    return out


def plain_ray(stream: list[tuple[str, float]]) -> tuple[float, list[Interval]]:
    import ray

    ray.init(num_gpus=GPUS, num_cpus=GPUS * SPG, resources={"accelerator_type:T4": GPUS},
             include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)

    @ray.remote(num_gpus=1 / SPG, num_cpus=0, max_calls=0)
    def hold(seconds: float, submitted: float) -> tuple[float, float, float]:
        start = time.time()
        if seconds > 0:
            time.sleep(seconds)
        return submitted, start, time.time()

    ray.get([hold.remote(0.3, time.time()) for _ in range(GPUS * SPG)])  # warm workers, as fairgpu does
    t0 = time.time()
    refs = [(name, hold.remote(seconds, time.time())) for name, seconds in stream]
    out = [Interval(name, 1, *ray.get(ref)) for name, ref in refs]
    wall = max(i.end for i in out) - t0
    ray.shutdown()
    return wall, out


def through_fairgpu(stream: list[tuple[str, float]], array: bool = False,
                    timings: dict | None = None) -> tuple[float, list[Interval], list[float]]:
    from scheduler.server import Embedded

    with tempfile.TemporaryDirectory() as tmp:
        server = Embedded(db_url=f"sqlite:///{tmp}/fg.db", state_dir=Path(tmp), gpus=GPUS, port=free_port(),
                          usage_period_s=5.0)
        server.start_background()
        try:
            tokens = setup_accounts(server.engine, server.clock)
            counts = {name: sum(1 for n, _ in stream if n == name) for name in WEIGHTS}
            seconds = stream[0][1]
            t0 = time.time()
            ids = set(flood(server.url, tokens, counts, seconds, array=array))
            if timings is not None:
                timings["submit_s"] = time.time() - t0
            while _finished(server.engine) < len(ids):  # a cheap count: the watcher must not load the server
                time.sleep(0.05)
            intervals, delays = job_intervals(server.engine, ids)
            wall = max(i.end for i in intervals) - t0
        finally:
            server.stop()
    return wall, intervals, delays


def _finished(engine) -> int:
    import sqlalchemy as sa

    from scheduler.store import Job, JobState

    with engine.connect() as conn:  # a plain read: no write lock (session_scope begins IMMEDIATE)
        return conn.execute(sa.select(sa.func.count()).where(Job.state.in_(
            [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]))).scalar_one()


def fairness(per_weight: int = 24, seconds: float = 2.0) -> dict:
    stream = job_stream(per_weight, seconds)
    ray_wall, ray_iv = plain_ray(stream)
    fg_wall, fg_iv, delays = through_fairgpu(stream)
    out = {}
    for label, iv, d in (("plain_ray", ray_iv, None), ("fairgpu", fg_iv, delays)):
        s = summarise(iv, WEIGHTS, GPUS * SPG, d)
        out[label] = {
            "share": s.share, "entitled": s.entitled, "max_deviation_pp": 100 * s.max_deviation,
            "jain_index": s.jain_index, "utilisation": s.utilisation, "window_s": s.window[1] - s.window[0],
            "wait_p95_s": s.wait_p95_s, "ray_start_delay_p50_s": s.ray_start_delay_p50_s,
            "ray_start_delay_max_s": s.ray_start_delay_max_s,
        }
    out["setup"] = {"jobs": len(stream), "seconds_each": seconds, "slices": GPUS * SPG}
    return out


def overhead(n: int = 500) -> dict:
    stream = [(INSTITUTIONS[i % 3][0], 0.0) for i in range(n)]
    ray_wall, _ = plain_ray(stream)
    per_job, array = {}, {}
    fg_wall, _, delays = through_fairgpu(stream, timings=per_job)
    arr_wall, _, _ = through_fairgpu(stream, array=True, timings=array)
    return {"jobs": n, "plain_ray_wall_s": ray_wall, "fairgpu_wall_s": fg_wall, "ratio": fg_wall / ray_wall,
            "submit_s": per_job["submit_s"], "fairgpu_array_wall_s": arr_wall, "array_ratio": arr_wall / ray_wall,
            "array_submit_s": array["submit_s"],
            "ray_start_delay_p50_s": sorted(delays)[len(delays) // 2] if delays else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["fairness", "overhead", "all"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = {}
    if args.which in ("fairness", "all"):
        results["fairness"] = fairness()
    if args.which in ("overhead", "all"):
        results["overhead"] = overhead()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    if "fairness" in results:
        f = results["fairness"]
        print(f"fairness: {f['setup']['jobs']} hold jobs of {f['setup']['seconds_each']} s on {f['setup']['slices']} slices")
        print(f"{'':10} {'share a/b/c (owed 16.7/33.3/50.0)':36} {'max dev pp':>10} {'Jain':>7} {'util':>6}")
        for label in ("plain_ray", "fairgpu"):
            r = f[label]
            shares = "/".join(f"{100 * r['share'][n]:.1f}" for n, _ in INSTITUTIONS)
            print(f"{label:10} {shares:36} {r['max_deviation_pp']:>10.1f} {r['jain_index']:>7.4f} "
                  f"{100 * r['utilisation']:>5.1f}%")
        print(f"fairgpu Ray start delay p50 {1000 * (f['fairgpu']['ray_start_delay_p50_s'] or 0):.1f} ms, "
              f"max {1000 * (f['fairgpu']['ray_start_delay_max_s'] or 0):.0f} ms")
    if "overhead" in results:
        o = results["overhead"]
        print(f"overhead: {o['jobs']} zero-length jobs: plain Ray {o['plain_ray_wall_s']:.2f} s, "
              f"fairgpu {o['fairgpu_wall_s']:.2f} s (submitted in {o['submit_s']:.2f} s), ratio {o['ratio']:.2f}; "
              f"as job arrays {o['fairgpu_array_wall_s']:.2f} s (submitted in {o['array_submit_s']:.2f} s), "
              f"ratio {o['array_ratio']:.2f}")


if __name__ == "__main__":
    main()
