"""What runs inside a Ray task: a `hold` job or a benchmark workload.

Invariants:
- The loop, the executor and the task share one typed contract: `TaskPayload` in,
  `TaskResult` out (frozen dataclasses). A workload setting the user left out travels
  as None and takes its default in one place, `workloads.runner.WorkloadSpec`.
- The task's files live in its job's directory (scheduler.runtime.jobfiles): it marks its start
  as it starts, writes its output to its attempt's log and its progress at most once a
  second, checkpoints every `checkpoint_every_s` and whenever the server asks, and
  publishes its result by an exclusive create before it returns, so a server that dies
  after the task finished finds the result on recovery, and a fenced attempt's result
  never counts.
- A job resumes from its checkpoint on its next attempt: a model job from its last saved
  step, a hold job with its remaining seconds.
- torch and TensorFlow are imported only when a workload runs.
- A script attempt may hold on its GPUs its slices' share of their memory plus a margin
  (scheduler.runtime.gpu_watchdog); past that for longer than the grace, it is killed and fails.
"""
from __future__ import annotations

import os
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field

from scheduler.runtime import jobfiles
from scheduler.vocab import HOLD, SCRIPT

PROGRESS_EVERY_S = 1.0


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
    slices: int = 0
    command: tuple[str, ...] | None = None  # a script job's command line
    mark_start: bool = True  # create the start marker as the task starts
    publish: bool = True  # publish the result file (warm-up tasks do not)
    checkpoint_every_s: float = 30.0
    # A script attempt's sandbox and limits (scheduler.runtime.sandbox). Host memory: this many
    # bytes per slice (the `host_memory_per_slice` setting), or None for the node's
    # memory divided by its slices (`node_slices`, from the node's capacity row).
    host_memory_per_slice: int | None = None
    node_slices: int = 0
    max_processes: int | None = None  # the `max_processes` setting; None: no limit
    allow_unsandboxed: bool = False  # `fairgpu up --unsandboxed-scripts`: run plain where no sandbox starts

    @classmethod
    def for_job(cls, *, job_id: int, attempt: int, model: str, framework: str | None, mode: str, spec: dict,
                num_gpus: float, results_dir: str, submitted_at: float, slices: int = 0) -> "TaskPayload":
        known = {k: spec[k] for k in WORKLOAD_KEYS + ("seconds",) if spec.get(k) is not None}
        command = tuple(spec["command"]) if spec.get("command") else None
        return cls(job_id=job_id, attempt=attempt, model=model, framework=framework, mode=mode, num_gpus=num_gpus,
                   results_dir=results_dir, submitted_at=submitted_at, slices=slices, command=command, **known)

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
    root, job_id, attempt = payload.results_dir, payload.job_id, payload.attempt
    marker = jobfiles.mark_started(root, job_id, attempt) if payload.mark_start else None
    log = jobfiles.LogFile(jobfiles.log_path(root, job_id, attempt)) if payload.publish else _Tail()
    try:
        with redirect_stdout(log):
            if payload.model == HOLD:
                measurement = _hold(payload)
            elif payload.model == SCRIPT:
                measurement = _script(payload, log)
            else:
                from workloads.runner import run_workload

                measurement = run_workload(payload.workload_spec(), memory_fraction=payload.memory_fraction,
                                           hooks=_hooks(payload))
    finally:
        log.close()
    result = TaskResult(started, time.time(), max(0.0, started - payload.submitted_at), os.getpid(),
                        log.tail(), measurement)
    if payload.publish:
        jobfiles.publish_result(root, job_id, attempt, result.as_record())
    if marker is not None:  # done with: the server need not remove it (it does if the task fails)
        marker.unlink(missing_ok=True)
    return result


class _Tail:
    """Output kept in memory only (warm-up tasks write no files)."""

    def __init__(self):
        self._text = ""

    def write(self, text: str) -> int:
        self._text = (self._text + text)[-20000:]
        return len(text)

    def flush(self) -> None:
        pass

    def tail(self) -> str:
        return self._text

    def close(self) -> None:
        pass


def _script(payload: TaskPayload, log) -> dict:
    """Run a script job's command in a fresh copy of its working directory, inside the
    sandbox (scheduler.runtime.sandbox) and under the kernel's limits (scheduler.runtime.scripts)."""
    import shutil

    from scheduler.runtime import archive, sandbox, scripts
    from scheduler.runtime.gpu_watchdog import GpuLimit
    from workloads.measure import nvml_visible_totals

    root, job_id = payload.results_dir, payload.job_id
    workdir = jobfiles.job_dir(root, job_id) / f"work-{payload.attempt}"
    checkpoints = jobfiles.ensure_dir(jobfiles.checkpoint_dir(root, job_id))
    archive.unpack(jobfiles.workdir_archive(root, job_id), workdir)
    memory, note = host_memory_limit(payload)
    confined = None
    try:
        confined = sandbox.prepare(
            list(payload.command or ()), workdir=workdir, checkpoint_dir=checkpoints, site_dir=scripts.SITE_DIR,
            limits=sandbox.Limits(memory, payload.max_processes), cgroup_name=f"{job_id}-{payload.attempt}-{os.getpid()}",
            hide=(os.path.dirname(os.path.abspath(root)), os.path.abspath(root)),
            visible_gpus=os.environ.get("CUDA_VISIBLE_DEVICES"))
    except sandbox.SandboxUnavailable as exc:
        if not payload.allow_unsandboxed:
            raise scripts.ScriptFailed(f"no sandbox can start on this node ({exc}); the server refuses to run "
                                       "scripts unconfined unless started with --unsandboxed-scripts") from None
        print(f"fairgpu: WARNING: no sandbox on this node ({exc}); running unconfined (--unsandboxed-scripts)",
              file=log, flush=True)
    inside = confined is not None
    env = scripts.script_env(job_id=job_id, attempt=payload.attempt, slices=payload.slices,
                             memory_fraction=payload.memory_fraction,
                             checkpoint_dir=sandbox.CHECKPOINT if inside else checkpoints,
                             workdir=sandbox.WORK if inside else workdir,
                             site_dir=sandbox.SITE if inside else scripts.SITE_DIR)
    try:
        return scripts.run(list(payload.command or ()), cwd=workdir, env=env, log=log,
                           stop_requested=lambda: jobfiles.checkpoint_requested(root, job_id),
                           on_stop=lambda: jobfiles.acknowledge_checkpoint(root, job_id),
                           gpu_limit=GpuLimit.for_share(payload.memory_fraction, nvml_visible_totals()),
                           sandbox=confined, memory_note=note)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def host_memory_limit(payload: TaskPayload) -> tuple[int, str]:
    """(bytes of host memory the attempt may hold, how that was reached): the
    `host_memory_per_slice` setting × its slices, or by default this node's memory
    divided by its slices × its slices."""
    slices = max(1, payload.slices)
    if payload.host_memory_per_slice:
        per = payload.host_memory_per_slice
        return per * slices, f"host_memory_per_slice {per / 2**30:.2f} GiB × {slices} slice(s)"
    total = node_memory_bytes()
    if payload.node_slices > 0:
        per = total // payload.node_slices
        return per * slices, (f"the node's {total / 2**30:.2f} GiB / its {payload.node_slices} slices "
                              f"× {slices} slice(s)")
    return total, f"the node's {total / 2**30:.2f} GiB (its slices unknown)"


def node_memory_bytes() -> int:
    """This node's memory: physical, or the memory cgroup's limit where that is lower (a pod)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _hold(payload: TaskPayload) -> dict:
    """Hold the slices for `seconds`, less what earlier attempts held (its checkpoint),
    reporting progress and checkpointing as a model job does."""
    seconds = float(payload.seconds or 0.0)
    if seconds <= 0 or not payload.publish:
        if seconds > 0:
            time.sleep(seconds)
        return {"held_s": seconds}
    root, job_id = payload.results_dir, payload.job_id
    saved = jobfiles.checkpoint_dir(root, job_id) / "hold.json"
    done = _read_held(saved)
    if done:
        print(f"resumed from checkpoint: {done:g} s of {seconds:g} s already held")
    t0, last_saved, last_progress = time.monotonic(), time.monotonic(), 0.0
    while True:
        held = done + time.monotonic() - t0
        if held >= seconds:
            break
        now = time.monotonic()
        if now - last_progress >= PROGRESS_EVERY_S:
            jobfiles.write_progress(root, job_id, _progress(held, seconds, None, seconds - held))
            last_progress = now
        if jobfiles.checkpoint_requested(root, job_id) or now - last_saved >= payload.checkpoint_every_s:
            _save_held(saved, held)
            jobfiles.acknowledge_checkpoint(root, job_id)
            last_saved = now
        time.sleep(min(0.1, seconds - held))
    print(f"held {payload.num_gpus} GPU for {seconds:g} s")
    return {"held_s": seconds, "resumed_from_s": done}


def _read_held(path) -> float:
    import json

    try:
        return float(json.loads(path.read_text())["held_s"])
    except (OSError, ValueError, KeyError):
        return 0.0


def _save_held(path, held: float) -> None:
    import json

    tmp = path.with_suffix(".tmp")
    with jobfiles.create_private(tmp) as f:
        json.dump({"held_s": held}, f)
    os.replace(tmp, path)


def _progress(step: float, steps: float, rate: float | None, eta: float | None) -> dict:
    return {"step": step, "steps": steps, "samples_per_second": rate, "eta_s": eta, "updated_at": time.time()}


def _hooks(payload: TaskPayload):
    """The workload's hooks: progress at most once a second, checkpoints in the job's directory."""
    from workloads.hooks import RunHooks

    root, job_id = payload.results_dir, payload.job_id
    last = [0.0]

    def on_step(p) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or p.step >= p.steps:
            jobfiles.write_progress(root, job_id, _progress(p.step, p.steps, p.samples_per_second, p.eta_s))
            last[0] = now

    return RunHooks(on_step=on_step, checkpoint_dir=str(jobfiles.ensure_dir(jobfiles.checkpoint_dir(root, job_id))),
                    checkpoint_every_s=payload.checkpoint_every_s,
                    checkpoint_requested=lambda: jobfiles.checkpoint_requested(root, job_id),
                    on_checkpoint=lambda _step: jobfiles.acknowledge_checkpoint(root, job_id))
