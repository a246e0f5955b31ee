"""What runs inside a Ray task: a `hold` job or a benchmark workload.

Invariants:
- The result is published as `results_dir/<job>-<attempt>.json` by an exclusive create
  (a hard link of a finished temp file) before the task returns, so a server that dies
  after the task finished but before it recorded the result finds it on recovery.
- The server fences an attempt it gives up on (after a crash, a lost node or a shutdown)
  by creating that same file first, marked `fenced`. Exactly one of the two creates
  wins, so an attempt either completed (and counts) or was fenced (and is run again):
  a job is never run to completion twice, even if an orphaned worker lives on.
- The task reports when it really started (`task_started_at`, epoch seconds), so the
  server can measure the delay between handing a job to Ray and Ray starting it; and
  it creates `results_dir/<job>-<attempt>.started` as it starts (and removes it once its
  result is published), so the server can see tasks Ray holds unstarted (a file, not an actor call: an actor every task calls
  cost more than the rest of a short task together).
- torch and TensorFlow are imported only when a workload runs.
"""
from __future__ import annotations

import io
import json
import os
import time
from contextlib import redirect_stdout
from pathlib import Path


def result_path(results_dir: str | os.PathLike, job_id: int, attempt: int) -> Path:
    return Path(results_dir) / f"{job_id}-{attempt}.json"


def started_path(results_dir: str | os.PathLike, job_id: int, attempt: int) -> Path:
    return Path(results_dir) / f"{job_id}-{attempt}.started"


class Fenced(RuntimeError):
    """The server gave up on this attempt before it finished; its result does not count."""


def read_result(results_dir: str | os.PathLike, job_id: int, attempt: int) -> dict | None:
    """The attempt's result, or None if it has none (or was fenced)."""
    path = result_path(results_dir, job_id, attempt)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return None if data.get("fenced") else data


def settle_attempt(results_dir: str | os.PathLike, job_id: int, attempt: int) -> dict | None:
    """Decide an attempt the server lost track of, once and for all: its result if it
    completed; else fence it (its result can never be published) and return None."""
    path = result_path(results_dir, job_id, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return read_result(results_dir, job_id, attempt)
    with os.fdopen(fd, "w") as f:
        json.dump({"fenced": True, "at": time.time()}, f)
    return None


def _write_result(results_dir: str, job_id: int, attempt: int, result: dict) -> None:
    path = result_path(results_dir, job_id, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, default=str))
    try:
        os.link(tmp, path)  # exclusive: fails if the server fenced this attempt first
    except FileExistsError:
        raise Fenced(f"job {job_id} attempt {attempt} was given up by the scheduler") from None
    finally:
        tmp.unlink(missing_ok=True)


def run_job(payload: dict) -> dict:
    """Run one job attempt. `payload`: job_id, attempt, model, framework, mode, spec,
    memory_fraction, results_dir, submitted_at (when the server handed it to Ray)."""
    started = time.time()
    if payload.get("mark_start"):
        marker = started_path(payload["results_dir"], payload["job_id"], payload["attempt"])
        marker.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644))
    log = io.StringIO()
    model = payload["model"]
    spec = dict(payload.get("spec") or {})
    if model == "hold":
        seconds = float(spec.get("seconds", 0.0))
        if seconds > 0:
            time.sleep(seconds)
        result: dict = {"held_s": seconds}
        print(f"held {payload.get('num_gpus')} GPU for {seconds:g} s", file=log)
    else:
        from workloads.runner import WorkloadSpec, run_workload

        wspec = WorkloadSpec(
            model=model, framework=payload["framework"], mode=payload.get("mode", "train"),
            steps=int(spec.get("steps", 20)), batch_size=int(spec.get("batch_size", 32)),
            warmup_steps=int(spec.get("warmup_steps", 3)), image_size=spec.get("image_size"),
        )
        with redirect_stdout(log):
            result = run_workload(wspec, memory_fraction=payload.get("memory_fraction"))
    finished = time.time()
    result = {
        **result,
        "task_started_at": started,
        "task_finished_at": finished,
        "ray_start_delay_s": max(0.0, started - float(payload.get("submitted_at", started))),
        "pid": os.getpid(),
        "log": log.getvalue()[-20000:],
    }
    if not payload.get("no_result_file"):
        _write_result(payload["results_dir"], payload["job_id"], payload["attempt"], result)
    if payload.get("mark_start"):  # done with: the server need not remove it (it does if the task fails)
        marker.unlink(missing_ok=True)
    return result
