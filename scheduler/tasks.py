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
- The loop, the executor and the task share one typed contract: `TaskPayload` in,
  `TaskResult` out (frozen dataclasses). A workload setting the user left out travels
  as None and takes its default in one place, `workloads.runner.WorkloadSpec`.
- Result and marker files are created 0600 (the state directory is the server's).
- torch and TensorFlow are imported only when a workload runs.
"""
from __future__ import annotations

import io
import json
import os
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_result(results_dir, job_id, attempt)
    with os.fdopen(fd, "w") as f:
        json.dump({"fenced": True, "at": time.time()}, f)
    return None


def _write_result(results_dir: str, job_id: int, attempt: int, result: dict) -> None:
    path = result_path(results_dir, job_id, attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(json.dumps(result, default=str))
    try:
        os.link(tmp, path)  # exclusive: fails if the server fenced this attempt first
    except FileExistsError:
        raise Fenced(f"job {job_id} attempt {attempt} was given up by the scheduler") from None
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class TaskPayload:
    """What the loop hands a Ray task: one attempt of one job, typed at both ends.

    A job's workload settings (steps, batch_size, warmup_steps, image_size) travel as
    given at submission; None means the default, which lives in one place only:
    `workloads.runner.WorkloadSpec` (the model's reference batch from the registry)."""

    job_id: int
    attempt: int
    model: str
    framework: str | None = None
    mode: str = "train"
    num_gpus: float = 0.0
    results_dir: str = ""
    submitted_at: float = 0.0  # when the server handed it to Ray (epoch s)
    seconds: float | None = None  # a hold job's length
    steps: int | None = None
    batch_size: int | None = None
    warmup_steps: int | None = None
    image_size: int | None = None
    mark_start: bool = True  # create the start marker as the task starts
    publish: bool = True  # publish the result file (warm-up tasks do not)

    @classmethod
    def for_job(cls, *, job_id: int, attempt: int, model: str, framework: str | None, mode: str, spec: dict,
                num_gpus: float, results_dir: str, submitted_at: float) -> "TaskPayload":
        known = {k: spec[k] for k in WORKLOAD_KEYS + ("seconds",) if spec.get(k) is not None}
        return cls(job_id=job_id, attempt=attempt, model=model, framework=framework, mode=mode, num_gpus=num_gpus,
                   results_dir=results_dir, submitted_at=submitted_at, **known)

    @property
    def memory_fraction(self) -> float:
        return min(1.0, self.num_gpus)

    def workload_spec(self):
        from workloads.runner import WorkloadSpec

        given = {k: getattr(self, k) for k in WORKLOAD_KEYS if getattr(self, k) is not None}
        return WorkloadSpec(model=self.model, framework=self.framework, mode=self.mode, **given)


WORKLOAD_KEYS = ("steps", "batch_size", "warmup_steps", "image_size")


@dataclass(frozen=True)
class TaskResult:
    """What a task returns and publishes. `measurement` is the workload's own record
    (workloads.runner.RESULT_KEYS) or, for a hold job, {"held_s": seconds}. Stored
    flat in `job.result` (`as_record`), so the API shows one level of keys."""

    task_started_at: float
    task_finished_at: float
    ray_start_delay_s: float
    pid: int
    log: str = ""
    measurement: dict = field(default_factory=dict)

    def as_record(self) -> dict:
        return {**self.measurement, "task_started_at": self.task_started_at,
                "task_finished_at": self.task_finished_at, "ray_start_delay_s": self.ray_start_delay_s,
                "pid": self.pid, "log": self.log}

    @classmethod
    def from_record(cls, record: dict) -> "TaskResult":
        own = {"task_started_at", "task_finished_at", "ray_start_delay_s", "pid", "log"}
        return cls(float(record["task_started_at"]), float(record["task_finished_at"]),
                   float(record.get("ray_start_delay_s", 0.0)), int(record.get("pid", 0)), record.get("log", ""),
                   {k: v for k, v in record.items() if k not in own})


def run_job(payload: TaskPayload) -> TaskResult:
    """Run one job attempt (see TaskPayload); publish and return its result."""
    started = time.time()
    if payload.mark_start:
        marker = started_path(payload.results_dir, payload.job_id, payload.attempt)
        marker.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
    log = io.StringIO()
    if payload.model == "hold":
        seconds = float(payload.seconds or 0.0)
        if seconds > 0:
            time.sleep(seconds)
        measurement: dict = {"held_s": seconds}
        print(f"held {payload.num_gpus} GPU for {seconds:g} s", file=log)
    else:
        from workloads.runner import run_workload

        with redirect_stdout(log):
            measurement = run_workload(payload.workload_spec(), memory_fraction=payload.memory_fraction)
    result = TaskResult(started, time.time(), max(0.0, started - payload.submitted_at), os.getpid(),
                        log.getvalue()[-20000:], measurement)
    if payload.publish:
        _write_result(payload.results_dir, payload.job_id, payload.attempt, result.as_record())
    if payload.mark_start:  # done with: the server need not remove it (it does if the task fails)
        marker.unlink(missing_ok=True)
    return result
