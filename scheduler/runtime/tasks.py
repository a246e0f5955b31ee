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
- A fenced attempt stops itself, with no server's help (`FenceWatch`): every
  `fence_check_s` the task beats its heartbeat and asks `jobfiles.superseded`. Once fenced
  it stops as a preemption does: a script gets SIGTERM, then SIGKILL after `stop_grace_s`;
  a hold job stops at once; a model stops at its next step, and its worker is killed if
  that step has not come within `stop_grace_s`. It commits no checkpoint from then on
  (every commit is guarded by the fence) and its result create fails on the fence. It
  ends with `jobfiles.Fenced`.
- Every attempt that writes files ends with its end marker (`jobfiles.mark_ended`:
  finished, failed, stopped or fenced), written after everything it ran has ended.
- A job resumes from the newest complete generation of its checkpoint on its next
  attempt (workloads.generations): a model job from its last saved step, a hold job with
  its remaining seconds, a script from what its FAIRGPU_CHECKPOINT_DIR held.
- torch and TensorFlow are imported only when a workload runs.
- A script attempt may hold on its GPUs its slices' share of their memory plus a margin
  (scheduler.runtime.gpu_watchdog); past that for longer than the grace, it is killed and fails.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import redirect_stdout
from dataclasses import dataclass, field

from scheduler.runtime import jobfiles
from scheduler.vocab import HOLD, SCRIPT
from workloads import generations

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
    fence_check_s: float = jobfiles.FENCE_CHECK_S  # how often the task looks for its fence
    stop_grace_s: float = 10.0  # a fenced or stopped script's time between SIGTERM and SIGKILL
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
    watch = FenceWatch(root, job_id, attempt, every_s=payload.fence_check_s, grace_s=payload.stop_grace_s,
                       kill_after_grace=payload.model not in (HOLD, SCRIPT), started_at=started) \
        if payload.publish else None
    how, why = "failed", ""
    try:
        try:
            with redirect_stdout(log):
                if watch is not None:
                    watch.start()
                if payload.model == HOLD:
                    measurement = _hold(payload, watch)
                elif payload.model == SCRIPT:
                    measurement = _script(payload, log, watch)
                else:
                    from workloads.runner import run_workload

                    measurement = run_workload(payload.workload_spec(), memory_fraction=payload.memory_fraction,
                                               hooks=_hooks(payload, watch))
        except BaseException as exc:
            if watch is not None and (isinstance(exc, generations.NotCommitted) or watch.check()):
                how, why = "fenced", watch.reason or str(exc)
                print(f"fairgpu: attempt {attempt} stopped: it was fenced ({why})", file=log, flush=True)
                raise jobfiles.Fenced(f"job {job_id} attempt {attempt} stopped: it was fenced ({why})") from None
            how, why = _how_it_failed(exc), f"{type(exc).__name__}: {exc}"
            raise
        finally:
            log.close()
        result = TaskResult(started, time.time(), max(0.0, started - payload.submitted_at), os.getpid(),
                            log.tail(), measurement)
        if payload.publish:
            try:
                jobfiles.publish_result(root, job_id, attempt, result.as_record())
            except jobfiles.Fenced as exc:
                how, why = "fenced", str(exc)
                raise
        how = "finished"
    finally:
        if watch is not None:
            watch.close()
            jobfiles.mark_ended(root, job_id, attempt, how=how, started_at=started, why=why[:500])
    if marker is not None:  # done with: the server need not remove it (it does if the task fails)
        marker.unlink(missing_ok=True)
    return result


def _how_it_failed(exc: BaseException) -> str:
    from scheduler.runtime.scripts import ScriptStopped

    return "stopped" if isinstance(exc, (ScriptStopped, KeyboardInterrupt)) else "failed"


class FenceWatch:
    """The attempt's own watch on its fence (module docstring): a daemon thread that, every
    `every_s`, beats the heartbeat and asks `jobfiles.superseded`. `fenced` turns True
    once; `may_commit` asks again right now (a checkpoint's guard). With
    `kill_after_grace`, an attempt still running `grace_s` after it was found fenced is
    ended by killing its own process (an in-process model whose step does not return)."""

    def __init__(self, root, job_id: int, attempt: int, *, every_s: float, grace_s: float,
                 kill_after_grace: bool = False, started_at: float | None = None):
        self.root, self.job_id, self.attempt, self.started_at = root, job_id, attempt, started_at
        self.every_s, self.grace_s, self.kill_after_grace = every_s, grace_s, kill_after_grace
        self.reason: str | None = None
        self._fenced = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fence-watch-{job_id}-{attempt}", daemon=True)

    @property
    def fenced(self) -> bool:
        return self._fenced.is_set()

    def check(self) -> bool:
        """Look for the fence now; True once fenced."""
        if not self._fenced.is_set():
            why = jobfiles.superseded(self.root, self.job_id, self.attempt)
            if why is not None:
                self.reason = why
                self._fenced.set()
        return self._fenced.is_set()

    def may_commit(self) -> bool:
        return not self.check()

    def start(self) -> None:
        jobfiles.touch_alive(self.root, self.job_id, self.attempt)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            try:
                jobfiles.touch_alive(self.root, self.job_id, self.attempt)
            except OSError:
                pass
            if self.check():
                break
        if self.fenced and self.kill_after_grace and not self._done.wait(self.grace_s):
            jobfiles.mark_ended(self.root, self.job_id, self.attempt, how="fenced", started_at=self.started_at,
                                why=f"{self.reason}; killed {self.grace_s:g} s after it was found fenced")
            os.kill(os.getpid(), signal.SIGKILL)


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


def _script(payload: TaskPayload, log, watch: "FenceWatch") -> dict:
    """Run a script job's command in a fresh copy of its working directory, inside the
    sandbox (scheduler.runtime.sandbox) and under the kernel's limits (scheduler.runtime.scripts).
    Its FAIRGPU_CHECKPOINT_DIR is a folder of the attempt's own, filled with the newest
    complete generation; it becomes a new generation when the script asks (`.fairgpu-commit`,
    script_site/fairgpu_checkpoint.py) or exits with status 0 after a stop request."""
    import shutil

    from scheduler.runtime import archive, sandbox, scripts
    from scheduler.runtime.gpu_watchdog import GpuLimit
    from workloads.measure import nvml_visible_totals

    root, job_id, attempt = payload.results_dir, payload.job_id, payload.attempt
    workdir = jobfiles.job_dir(root, job_id) / f"work-{attempt}"
    store = jobfiles.checkpoint_dir(root, job_id)
    checkpoints = jobfiles.attempt_checkpoint_dir(root, job_id, attempt)
    shutil.rmtree(checkpoints, ignore_errors=True)
    jobfiles.ensure_dir(checkpoints)
    newest = generations.latest(store)
    if newest is not None:
        generations.copy_contents(newest, checkpoints)
    archive.unpack(jobfiles.workdir_archive(root, job_id), workdir)
    memory, note = host_memory_limit(payload)
    confined = None
    try:
        confined = sandbox.prepare(
            list(payload.command or ()), workdir=workdir, checkpoint_dir=checkpoints, site_dir=scripts.SITE_DIR,
            limits=sandbox.Limits(memory, payload.max_processes), cgroup_name=f"{job_id}-{attempt}-{os.getpid()}",
            hide=(os.path.dirname(os.path.abspath(root)), os.path.abspath(root)),
            visible_gpus=os.environ.get("CUDA_VISIBLE_DEVICES"))
    except sandbox.SandboxUnavailable as exc:
        if not payload.allow_unsandboxed:
            shutil.rmtree(checkpoints, ignore_errors=True)
            raise scripts.ScriptFailed(f"no sandbox can start on this node ({exc}); the server refuses to run "
                                       "scripts unconfined unless started with --unsandboxed-scripts") from None
        print(f"fairgpu: WARNING: no sandbox on this node ({exc}); running unconfined (--unsandboxed-scripts)",
              file=log, flush=True)
    inside = confined is not None
    env = scripts.script_env(job_id=job_id, attempt=attempt, slices=payload.slices,
                             memory_fraction=payload.memory_fraction,
                             checkpoint_dir=sandbox.CHECKPOINT if inside else checkpoints,
                             workdir=sandbox.WORK if inside else workdir,
                             site_dir=sandbox.SITE if inside else scripts.SITE_DIR)
    request = checkpoints / scripts.COMMIT_REQUEST

    def on_poll() -> None:  # the script asked: its folder, as it is now, becomes a generation
        if request.exists() and not watch.fenced:
            try:
                generations.adopt_copy(store, checkpoints, attempt=attempt, may_commit=watch.may_commit,
                                       skip=(scripts.COMMIT_REQUEST,))
            except generations.NotCommitted:
                return  # fenced: it is being stopped; the request stays unanswered
            request.unlink(missing_ok=True)

    def on_stop(code: int) -> None:  # it exited after SIGTERM: status 0 means it saved
        if code == 0 and not watch.fenced:
            request.unlink(missing_ok=True)
            try:
                generations.commit(store, checkpoints, attempt=attempt, may_commit=watch.may_commit)
            except generations.NotCommitted:
                return
        if not watch.fenced:
            jobfiles.acknowledge_checkpoint(root, job_id)

    try:
        return scripts.run(list(payload.command or ()), cwd=workdir, env=env, log=log,
                           stop_requested=lambda: watch.fenced or jobfiles.checkpoint_requested(root, job_id),
                           on_stop=on_stop, on_poll=on_poll, grace_s=payload.stop_grace_s,
                           gpu_limit=GpuLimit.for_share(payload.memory_fraction, nvml_visible_totals()),
                           sandbox=confined, memory_note=note)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(checkpoints, ignore_errors=True)


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


def _hold(payload: TaskPayload, watch: "FenceWatch | None") -> dict:
    """Hold the slices for `seconds`, less what earlier attempts held (the newest
    generation of its checkpoint), reporting progress and checkpointing as a model job
    does; a fenced attempt stops at once (jobfiles.Fenced)."""
    seconds = float(payload.seconds or 0.0)
    if seconds <= 0 or not payload.publish:
        if seconds > 0:
            time.sleep(seconds)
        return {"held_s": seconds}
    root, job_id, attempt = payload.results_dir, payload.job_id, payload.attempt
    store = jobfiles.checkpoint_dir(root, job_id)
    newest = generations.latest(store)
    done = _read_held(newest / HOLD_FILE) if newest is not None else 0.0
    if done:
        print(f"resumed from checkpoint: {done:g} s of {seconds:g} s already held")
    t0, last_saved, last_progress = time.monotonic(), time.monotonic(), 0.0
    while True:
        if watch is not None and watch.fenced:
            raise jobfiles.Fenced(f"job {job_id} attempt {attempt} was fenced: {watch.reason}")
        held = done + time.monotonic() - t0
        if held >= seconds:
            break
        now = time.monotonic()
        if now - last_progress >= PROGRESS_EVERY_S:
            jobfiles.write_progress(root, job_id, _progress(held, seconds, None, seconds - held))
            last_progress = now
        if jobfiles.checkpoint_requested(root, job_id) or now - last_saved >= payload.checkpoint_every_s:
            _save_held(store, held, attempt, None if watch is None else watch.may_commit)
            jobfiles.acknowledge_checkpoint(root, job_id)
            last_saved = now
        time.sleep(min(0.1, seconds - held))
    print(f"held {payload.num_gpus} GPU for {seconds:g} s")
    return {"held_s": seconds, "resumed_from_s": done}


HOLD_FILE = "hold.json"


def _read_held(path) -> float:
    import json

    try:
        return float(json.loads(path.read_text())["held_s"])
    except (OSError, ValueError, KeyError):
        return 0.0


def _save_held(store, held: float, attempt: int, may_commit) -> None:
    """A new generation holding the seconds held so far (NotCommitted once fenced)."""
    import json

    with generations.writing(store, attempt=attempt, may_commit=may_commit) as folder:
        with jobfiles.create_private(folder / HOLD_FILE) as f:
            json.dump({"held_s": held}, f)


def _progress(step: float, steps: float, rate: float | None, eta: float | None) -> dict:
    return {"step": step, "steps": steps, "samples_per_second": rate, "eta_s": eta, "updated_at": time.time()}


def _hooks(payload: TaskPayload, watch: "FenceWatch | None"):
    """The workload's hooks: progress at most once a second, in the steps the job asked for
    (its warm-up left out: `--steps 3` reads 0/3 to 3/3), checkpoints as generations
    of the job's store (guarded by the fence), and a stop at the first step after the
    attempt was found fenced."""
    from workloads.hooks import RunHooks

    root, job_id, attempt = payload.results_dir, payload.job_id, payload.attempt
    last = [0.0]
    fenced = (lambda: False) if watch is None else (lambda: watch.fenced)
    warmup = payload.workload_spec().warmup_steps  # the workload counts it; the job's progress does not

    def on_step(p) -> None:
        if fenced():
            raise jobfiles.Fenced(f"job {job_id} attempt {attempt} was fenced: {watch.reason}")
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or p.step >= p.steps:
            jobfiles.write_progress(root, job_id, _progress(max(0, p.step - warmup), max(0, p.steps - warmup),
                                                            p.samples_per_second, p.eta_s))
            last[0] = now

    return RunHooks(on_step=on_step, checkpoint_dir=str(jobfiles.ensure_dir(jobfiles.checkpoint_dir(root, job_id))),
                    checkpoint_every_s=payload.checkpoint_every_s,
                    checkpoint_requested=lambda: not fenced() and jobfiles.checkpoint_requested(root, job_id),
                    on_checkpoint=lambda _step: jobfiles.acknowledge_checkpoint(root, job_id),
                    attempt=attempt, may_commit=None if watch is None else watch.may_commit)
