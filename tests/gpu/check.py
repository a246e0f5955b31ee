"""The GPU check, in one command: `fairgpu bench` on CPU and GPU, then an end-to-end pass
of `fairgpu up` on the real GPU (tests/gpu/e2e.py); results as JSON in OUTDIR.

    python tests/gpu/check.py OUTDIR               # a GPU machine (tests/gpu/run.sh does this)
    python tests/gpu/check.py OUTDIR --allow-cpu   # no GPU: logical GPUs, and it says so

Writes OUTDIR/check.json (`gpu`, `nvml`, `ok`, `checks`: [{name, ok, detail}], `bench`,
`e2e`), OUTDIR/bench.json and bench.stderr.txt (the bench's own output), OUTDIR/e2e/up.log.

Invariants:
- It never pretends. Without a GPU (NVML finds no driver or device) and without
  `--allow-cpu` it exits 1 with one line and writes nothing. With `--allow-cpu` and no
  GPU, check.json says `"gpu": false` and `"nvml": "absent (no GPU)"`, the bench runs
  CPU rows only, and the NVML and per-job GPU memory checks are left out, not passed.
- fairgpu runs only as its CLI (`python -m scheduler.cli`) in subprocesses, so this
  script needs the standard library and httpx, plus `workloads.bench`'s NVML count
  (nvidia-ml-py; it loads no framework) to look for a GPU.
- On a GPU, tests/gpu/cap_check.py runs after the end-to-end pass (`gpu_cap`, its server's
  log in OUTDIR/gpu_cap/up.log): a script that lifts PyTorch's memory cap must be stopped
  by the GPU memory watchdog, and one that fills its cap must not be.
- The end-to-end pass runs first, then the bench; check.json is rewritten after each
  (`finished_at` null: cut off before the end). Exit 0 only if every check passed;
  otherwise exit 1 after writing check.json and naming the failed checks on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cap_check
import e2e

# The e2e jobs: long enough on a GPU that a scrape sees them running; a few steps on a CPU.
GPU_JOB = {"model": "conv6", "framework": "pytorch", "mode": "train", "steps": 2000}
CPU_JOB = {"model": "conv6", "framework": "pytorch", "mode": "train", "steps": 2, "batch_size": 4}


def gpu_count() -> int:
    """GPUs NVML reports; 0 without nvidia-ml-py, a driver or a device (workloads.bench's
    own count: importing it loads no framework)."""
    from workloads.bench import nvml_gpu_count

    return nvml_gpu_count()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tests/gpu/check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", type=Path, help="where check.json and the logs go (created)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run without a GPU: logical GPUs, no NVML checks; says \"gpu\": false")
    p.add_argument("--skip-bench", action="store_true", help="only the end-to-end pass")
    p.add_argument("--quick", action="store_true", help="pass --quick to fairgpu bench")
    p.add_argument("--bench-models", default=None, metavar="LIST", help="fairgpu bench --models")
    p.add_argument("--bench-args", default="", metavar="ARGS", help="more fairgpu bench options, space-separated")
    p.add_argument("--jobs-each", type=int, default=2, metavar="N", help="e2e jobs per institution (default 2)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="limit of each step, seconds")
    args = p.parse_args(argv)
    if args.jobs_each < 1 or args.timeout <= 0:
        p.error("--jobs-each must be >= 1 and --timeout > 0")
    return args


def bench(args, gpu: bool) -> tuple[dict, list[dict]]:
    cmd = [sys.executable, "-m", "scheduler.cli", "bench", "--devices", "cpu,gpu" if gpu else "cpu",
           "--frameworks", "pytorch", "--json"]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--models", args.bench_models] if args.bench_models else []
    cmd += args.bench_args.split()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the bench and its framework worker
        out, err = proc.communicate()
        rc, err = None, f"{err}\ntimed out after {args.timeout:.0f} s"
    (args.outdir / "bench.json").write_text(out)
    (args.outdir / "bench.stderr.txt").write_text(err)
    facts = {"command": " ".join(cmd[1:]), "exit": rc, "seconds": round(time.monotonic() - t0, 1)}
    try:
        rows = json.loads(out)
    except ValueError:
        rows = []
    facts["rows"] = [{k: r.get(k) for k in ("section", "model", "device", "device_name", "batch_size",
                                            "samples_per_second", "gpu_speedup", "step_time_p50_s",
                                            "nvml_peak_memory_bytes", "peak_memory_bytes", "threads", "cores",
                                            "load", "loaded", "framework_version", "error")} for r in rows]
    return facts, bench_checks(rc, rows, err, gpu)


def bench_checks(rc: int | None, rows: list[dict], stderr: str, gpu: bool) -> list[dict]:
    """The bench's pass/fail lines: it ran, no row failed, and on a GPU each model has a
    GPU training row with its speedup over the same model on the CPU."""
    last = (stderr.strip().splitlines() or [""])[-1]
    checks = [
        {"name": "bench ran", "ok": rc == 0 and bool(rows), "detail": f"exit {rc}; {len(rows)} rows; {last}"},
        {"name": "no bench row failed", "ok": bool(rows) and not any("error" in r for r in rows),
         "detail": [f"{r['model']} {r['device']}: {r['error']}" for r in rows if "error" in r]},
    ]
    if gpu:
        train = [r for r in rows if r.get("section") == "train"]
        gpu_rows = [r for r in train if r.get("device") == "gpu" and "error" not in r]
        models = {r["model"] for r in train}
        checks.append({"name": "a GPU training row per model, with its speedup over the CPU",
                       "ok": bool(models) and {r["model"] for r in gpu_rows if r.get("gpu_speedup")} == models,
                       "detail": {r["model"]: r.get("gpu_speedup") for r in gpu_rows}})
    return checks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    gpus = gpu_count()
    if not gpus and not args.allow_cpu:
        print("check: no GPU here (NVML finds no driver or device); --allow-cpu runs it on logical GPUs",
              file=sys.stderr)
        return 1
    gpu = gpus > 0
    args.outdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"gpu": gpu, "gpus": gpus, "nvml": "present" if gpu else "absent (no GPU)",
                    "host": platform.node(), "python": platform.python_version(),
                    "started_at": _now(), "finished_at": None, "ok": False, "checks": [], "e2e": None,
                    "bench": "skipped (--skip-bench)" if args.skip_bench else "not run yet"}
    job = GPU_JOB if gpu else CPU_JOB
    # the end-to-end pass first: it is short, and a bench cut off by a time limit leaves it written
    report["e2e"] = e2e.run(args.outdir / "e2e", gpu=gpu, jobs_each=args.jobs_each, job=job, timeout_s=args.timeout)
    report["checks"] += e2e.checks(report["e2e"], gpu=gpu)
    _write(args.outdir, report)
    if gpu:  # the GPU memory watchdog stops a script that lifted its cap (nothing to measure on a CPU)
        report["gpu_cap"] = cap_check.run(args.outdir / "gpu_cap", timeout_s=args.timeout)
        report["checks"] += cap_check.checks(report["gpu_cap"])
        _write(args.outdir, report)
    if not args.skip_bench:
        report["bench"], found = bench(args, gpu)
        report["checks"] += found
    report["ok"] = bool(report["checks"]) and all(c["ok"] for c in report["checks"])
    report["finished_at"] = _now()
    _write(args.outdir, report)
    for c in report["checks"]:
        print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}", file=sys.stderr)
    where = "on the GPU" if gpu else "on the CPU (--allow-cpu: no NVML checks)"
    failed = [c["name"] for c in report["checks"] if not c["ok"]]
    print(f"check {where}: " + (f"{len(failed)} failed: {'; '.join(failed)}" if failed else "all passed")
          + f" ({args.outdir / 'check.json'})", file=sys.stderr)
    return 0 if report["ok"] else 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(outdir: Path, report: dict) -> None:
    """check.json, replaced whole (never half-written): after each step, so a run cut off keeps what it did."""
    tmp = outdir / "check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(outdir / "check.json")

if __name__ == "__main__":
    sys.exit(main())
