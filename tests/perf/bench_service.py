"""Service benchmarks, each beside plain Ray in the same run (not timed tests).

  fairness: institutions weighted 1:2:3 saturate 8 slices (2 logical T4 GPUs) with equal
            short `hold` jobs; shares of slice-time over the contended window against
            1/6, 2/6, 3/6, Jain's index and slice utilisation. Beside it: the same job
            stream submitted straight to Ray (num_gpus=0.25 each), no fairgpu.
  overhead: 500 zero-length jobs through fairgpu (API, database, scheduling loop, Ray)
            against the same 500 as plain Ray tasks of the same shape; wall time from the
            first submission to the last completion. Beside them, the floor fairgpu's rule
            sets ("nothing is given to Ray that Ray cannot start at once"): Ray alone, 8
            tasks in flight, the next handed over as one finishes. All run on one Ray
            instance (the fairgpu server joins it), warmed up, in alternating rounds;
            medians reported.
            fairgpu runs twice a round: each client's jobs as one job array (`count`;
            still 500 jobs, each scheduled, started, recorded and fenced on its own), and
            each job its own POST (3 client threads).

Run: .venv/bin/python tests/perf/bench_service.py fairness|overhead|all [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scheduler.contention import Interval, summarise  # noqa: E402
from scheduler.demo import INSTITUTIONS, flood, job_intervals, setup_accounts  # noqa: E402

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
        server = Embedded(db_url=f"sqlite:///{tmp}/fg.db", state_dir=Path(tmp), gpus=GPUS, port=0,
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


def _finished(engine, ids=None) -> int:
    import sqlalchemy as sa

    from scheduler.store import Job, JobState

    q = sa.select(sa.func.count()).where(Job.state.in_([JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]))
    if ids is not None:
        q = q.where(Job.id >= min(ids), Job.id <= max(ids))  # a batch's ids are consecutive enough
    with engine.connect() as conn:  # a plain read: no write lock (session_scope begins IMMEDIATE)
        return conn.execute(q).scalar_one()


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


def overhead(n: int = 500, rounds: int = 5, warm: int = 500, per_post: bool = True) -> dict:
    """Plain Ray and fairgpu side by side on one Ray instance: the fairgpu server joins the
    Ray the benchmark started, so both use the same worker processes. After an untimed
    warm-up of each path (Ray starts worker processes as the first tasks arrive, at ~1 s of
    CPU each on a 2-core VM, which would otherwise swamp what is measured), `rounds`
    rounds each run n zero-length tasks straight to Ray, n jobs through fairgpu as job
    arrays, and n jobs through fairgpu one POST each, in that order."""
    import statistics

    import ray

    from scheduler.server import Embedded

    ray.init(num_gpus=GPUS, num_cpus=GPUS * SPG, resources={"accelerator_type:T4": GPUS},
             include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)

    @ray.remote(num_gpus=1 / SPG, num_cpus=0, max_calls=0)
    def hold(seconds: float, submitted: float) -> tuple[float, float, float]:
        start = time.time()
        return submitted, start, time.time()

    def plain(count: int) -> float:
        t0 = time.time()
        out = ray.get([hold.remote(0.0, time.time()) for _ in range(count)])
        return max(end for _s, _b, end in out) - t0

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from scheduler.runtime.tasks import TaskPayload, run_job

    job_task = ray.remote(max_calls=0)(run_job).options(
        num_gpus=1 / SPG, num_cpus=0, max_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False))
    serial = iter(range(1, 10**9))

    def gated(count: int, results_dir: str) -> float:
        """Ray under fairgpu's rule and nothing else: a task only when a slice is free (8
        in flight, the next handed over as one finishes), fairgpu's task body (start
        marker, result file published by exclusive link); no database, API or policy."""
        def submit():
            return job_task.remote(TaskPayload(job_id=next(serial), attempt=1, model="hold", seconds=0.0,
                                               num_gpus=1 / SPG, results_dir=results_dir, submitted_at=time.time()))
        t0 = time.time()
        inflight = [submit() for _ in range(min(GPUS * SPG, count))]
        left, end = count - len(inflight), 0.0
        while inflight:
            ready, inflight = ray.wait(inflight, num_returns=1)
            end = max([end] + [r.task_finished_at for r in ray.get(ready)])
            for _ in ready:
                if left > 0:
                    inflight.append(submit())
                    left -= 1
        return end - t0

    per = _split(n)
    walls: dict[str, list[float]] = {"plain_ray": [], "ray_gated": [], "fairgpu_array": [], "fairgpu_per_post": []}
    submit: dict[str, list[float]] = {"fairgpu_array": [], "fairgpu_per_post": []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        server = Embedded(db_url=f"sqlite:///{tmp}/fg.db", state_dir=Path(tmp), gpus=GPUS, port=0,
                          usage_period_s=5.0)
        server.start_background()
        try:
            tokens = setup_accounts(server.engine, server.clock)

            # The institutions' clients run in a process of their own, as they would (on
            # their own machines): in the server's process their HTTP work would compete
            # with the server for one interpreter lock.
            clients = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            stack.callback(clients.shutdown)
            clients.submit(flood, server.url, tokens, dict.fromkeys(tokens, 0), 0.0).result()  # started and imported before timing

            def through(counts: dict[str, int], array: bool) -> tuple[float, float]:
                t0 = time.time()
                ids = set(clients.submit(flood, server.url, tokens, counts, 0.0, array=array).result())
                submitted = time.time() - t0
                while _finished(server.engine, ids) < len(ids):
                    time.sleep(0.2)  # wall comes from the jobs' own end times, not from this poll
                intervals, _ = job_intervals(server.engine, ids)
                return max(i.end for i in intervals) - t0, submitted

            gated_dir = str(Path(tmp) / "gated")
            plain(warm)
            gated(warm, gated_dir)
            through(_split(warm), array=True)
            for _ in range(rounds):
                walls["plain_ray"].append(plain(n))
                walls["ray_gated"].append(gated(n, gated_dir))
                for key, array in (("fairgpu_array", True), ("fairgpu_per_post", False))[:2 if per_post else 1]:
                    wall, submitted = through(per, array)
                    walls[key].append(wall)
                    submit[key].append(submitted)
        finally:
            server.stop()  # and Ray with it
    med = {k: statistics.median(v) if v else float("nan") for k, v in walls.items()}
    return {
        "jobs": n, "rounds": rounds, "warm_up_jobs": warm, "walls_s": walls, "median_wall_s": med,
        "median_submit_s": {k: statistics.median(v) if v else float("nan") for k, v in submit.items()},
        "ratio_array": med["fairgpu_array"] / med["plain_ray"],
        "ratio_gated": med["ray_gated"] / med["plain_ray"],
        "ratio_array_to_gated": med["fairgpu_array"] / med["ray_gated"],
        "ratio_per_post": med["fairgpu_per_post"] / med["plain_ray"],
        "round_ratios_array": [f / p for f, p in zip(walls["fairgpu_array"], walls["plain_ray"])],
    }


def _split(n: int) -> dict[str, int]:
    """n jobs over the institutions, round robin."""
    out = dict.fromkeys(WEIGHTS, 0)
    for i in range(n):
        out[INSTITUTIONS[i % len(INSTITUTIONS)][0]] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["fairness", "overhead", "all"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="overhead: alternating rounds (default 5)")
    ap.add_argument("--no-per-post", action="store_true", help="overhead: job arrays only")
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="the interpreter's thread switch interval in this process (default: Python's, 5 ms)")
    args = ap.parse_args()
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    results = {}
    if args.which in ("fairness", "all"):
        results["fairness"] = fairness()
    if args.which in ("overhead", "all"):
        results["overhead"] = overhead(rounds=args.rounds, per_post=not args.no_per_post)
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
        med, sub = o["median_wall_s"], o["median_submit_s"]
        print(f"overhead: {o['jobs']} zero-length jobs, median of {o['rounds']} alternating rounds on one Ray "
              f"(after {o['warm_up_jobs']} warm-up jobs each):")
        print(f"  plain Ray {med['plain_ray']:.2f} s; Ray gated as fairgpu gates it (no scheduler) "
              f"{med['ray_gated']:.2f} s, ratio {o['ratio_gated']:.2f}")
        print(f"  fairgpu, job arrays {med['fairgpu_array']:.2f} s "
              f"(submitted in {sub['fairgpu_array']:.2f} s), ratio {o['ratio_array']:.2f}; "
              f"fairgpu, one POST per job {med['fairgpu_per_post']:.2f} s "
              f"(submitted in {sub['fairgpu_per_post']:.2f} s), ratio {o['ratio_per_post']:.2f}")
        print(f"  fairgpu (arrays) against gated Ray: {o['ratio_array_to_gated']:.2f}")
        print("  rounds (plain / gated / array / per POST): " + "; ".join(
            f"{p:.2f}/{g:.2f}/{a:.2f}/" + (f"{q:.2f}" if q is not None else "-") for p, g, a, q in zip(
                o["walls_s"]["plain_ray"], o["walls_s"]["ray_gated"], o["walls_s"]["fairgpu_array"],
                o["walls_s"]["fairgpu_per_post"] or [None] * o["rounds"])))


if __name__ == "__main__":
    main()
