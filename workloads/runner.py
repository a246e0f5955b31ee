"""One entry point for a workload, used by scheduler jobs and `fairgpu bench`.

    spec = WorkloadSpec(model="resnet18", framework="pytorch", mode="train", steps=20)
    result = run_workload(spec, memory_fraction=None)
    result = run_workload(spec, hooks=RunHooks(on_step=print, checkpoint_dir="ckpt/42",
                                               checkpoint_every_s=300))

Invariants:
- Importing this module imports no framework; `run_workload` imports the
  chosen one (through `torch_run` or `tf_run`).
- A `WorkloadSpec` that exists is valid: `__post_init__` raises ValueError
  with a one-line message otherwise.
- Warm-up steps (which include tracing and compilation) are timed apart and
  excluded from every figure. Batches are staged on the device before timing:
  step times measure compute, not data loading.
- The result is a flat JSON-serialisable dict (see `RESULT_KEYS`); a figure
  that could not be measured is None, never estimated.
- `measured_cpu_time_s` is this process's CPU time (all threads) over the
  measured steps: on a shared machine it moves far less than wall time.
- Steps are counted globally, warm-up included (0 .. warmup_steps + steps), and
  step i always trains on batch i % MAX_STAGED_BATCHES, so an attempt resumed
  from a checkpoint (workloads.checkpoint) runs only the remaining steps on the
  same batch sequence. Every attempt warms up (a new process traces and
  compiles again): a resumed one times its first min(warmup_steps, remaining)
  steps as warm-up, and its figures cover its own measured steps; losses span
  all attempts. Time spent saving checkpoints is left out of every figure.
- Progress goes to `hooks.on_step` after every step and, rate-limited, to
  stdout as one line (`step 40/200  loss 2.301  812.4 samples/s  eta 12 s`),
  with a line per checkpoint saved and one on resuming.
- Without hooks (or with a `checkpoint_dir` that holds nothing) a run is what
  it always was: the same batches, steps and figures.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from workloads import checkpoint, data, measure, registry
from workloads.hooks import Progress, RateWindow, RunHooks, format_progress

EXECUTIONS = ("default", "eager", "compiled")
# The runner stages at most this many distinct batches and cycles over them.
MAX_STAGED_BATCHES = 16
MAX_LOSSES_KEPT = 1000
# The step log prints about this many lines per run, at most every MIN and at least every MAX seconds.
LOG_LINES = 10
LOG_MIN_INTERVAL_S = 5.0
LOG_MAX_INTERVAL_S = 60.0

RESULT_KEYS = (
    "model", "framework", "mode", "execution", "device", "device_name", "batch_size", "steps",
    "warmup_steps", "image_size", "data", "samples_per_second", "step_time_p50_s",
    "step_time_p95_s", "step_time_mean_s", "warmup_time_s", "wall_time_s", "measured_cpu_time_s", "peak_memory_bytes",
    "framework_peak_memory_bytes", "nvml_peak_memory_bytes", "rss_peak_bytes", "params",
    "framework_version", "threads", "loss_first", "loss_last", "losses", "memory_fraction",
    "seed", "notes", "resumed_from_step", "checkpoints_saved", "checkpoint_time_s",
)


@dataclass(frozen=True)
class WorkloadSpec:
    model: str
    framework: str
    mode: str = "train"
    steps: int = 20
    batch_size: int | None = None  # None: the model's reference batch (registry.INFO)
    warmup_steps: int = 3
    image_size: int | None = None  # None: 32 for CIFAR models, 256 for CycleGAN
    device: str = "auto"  # auto | cpu | gpu
    data_dir: str | None = None  # None: synthetic data
    seed: int = 0
    execution: str = "default"  # default | eager | compiled (torch.compile / XLA)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def one_of(field: str, value, choices):
            if value not in choices:
                raise ValueError(f"unknown {field} {value!r}; choose from {', '.join(choices)}")

        one_of("model", self.model, registry.MODELS)
        one_of("framework", self.framework, registry.FRAMEWORKS)
        one_of("mode", self.mode, registry.MODES)
        one_of("device", self.device, registry.DEVICES)
        one_of("execution", self.execution, EXECUTIONS)
        for name in ("steps", "batch_size", "image_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        registry.check_image_size(self.model, self.resolved_image_size)

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size or registry.INFO[self.model].default_batch

    @property
    def resolved_image_size(self) -> int:
        return self.image_size or registry.default_image_size(self.model)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _backend(framework: str):
    if framework == "pytorch":
        from workloads import torch_run

        return torch_run
    from workloads import tf_run

    return tf_run


def gpu_available(framework: str) -> bool:
    """Whether `framework` sees a GPU (imports the framework)."""
    return _backend(framework).gpu_available()


def run_workload(spec: WorkloadSpec, memory_fraction: float | None = None, *,
                 hooks: RunHooks | None = None) -> dict:
    """Run `spec` and return its result record (see module docstring).

    `hooks` (workloads.hooks.RunHooks) reports progress after every step and
    checkpoints the run; with a `checkpoint_dir` that holds a checkpoint of
    this run, the run resumes from it and executes only the remaining steps."""
    if memory_fraction is not None and not (0 < memory_fraction <= 1):
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction!r}")
    hooks = hooks or RunHooks()
    t_start = time.perf_counter()
    backend = _backend(spec.framework)
    session = backend.Session(spec, memory_fraction)
    batch, size = spec.resolved_batch_size, spec.resolved_image_size
    total = spec.warmup_steps + spec.steps
    train = spec.mode == "train"
    notes: list[str] = []
    losses: list[float] = []
    loss_last: float | None = None

    start, meta = 0, None
    if hooks.checkpoint_dir:
        try:
            meta = checkpoint.load(hooks.checkpoint_dir, spec, session)
        except checkpoint.CheckpointError as e:
            _say(f"checkpoint not used, starting from step 0: {e}")
            notes.append(f"checkpoint not used, starting from step 0: {e}")
            if isinstance(e, checkpoint.StateLoadError):  # a half-done load: build afresh
                session = backend.Session(spec, memory_fraction)
    if meta is not None:
        start = min(int(meta["step"]), total)
        losses = list(meta.get("losses") or [])[:MAX_LOSSES_KEPT]
        loss_last = meta.get("loss_last")
        _say(f"resumed from checkpoint at step {start}")

    # Batches are indexed by global step (step i uses batch i % MAX_STAGED_BATCHES), and
    # make_batches(n) is a prefix of make_batches(n + k): a resumed run sees the same sequence.
    n_batches = min(total, MAX_STAGED_BATCHES)
    batches = session.stage(data.make_batches(spec.model, batch, n_batches, size, spec.data_dir, spec.seed))
    # A fresh process traces and compiles again, so every attempt warms up: a resumed
    # attempt times its first min(warmup_steps, remaining) steps as its warm-up.
    warmup_end = min(total, start + spec.warmup_steps)
    if meta is not None:
        checkpoint.restore_rng(meta["rng"])

    saver = _Saver(hooks, spec, session, total, start)
    logger = _StepLog(total, start)
    window = RateWindow(batch)
    state = {"losses": losses, "loss_last": loss_last}

    def one_step(i: int) -> float:
        """Global step i (0-based): run it, report it, checkpoint if due; its step time."""
        t = time.perf_counter()
        loss = session.step(batches[i % MAX_STAGED_BATCHES])
        dt = time.perf_counter() - t
        window.step_done()
        if loss is not None:
            if len(state["losses"]) < MAX_LOSSES_KEPT:
                state["losses"].append(loss)
            state["loss_last"] = loss
        progress = window.progress(i + 1, total, loss if train else None)
        if hooks.on_step is not None:
            hooks.on_step(progress)
        logger.maybe_print(progress)
        if saver.due(i + 1):
            saver.save(i + 1, state["losses"], state["loss_last"])
            window.mark_start()
        return dt

    window.mark_start()
    t0 = time.perf_counter()
    for i in range(start, warmup_end):
        one_step(i)
    warmup_time = time.perf_counter() - t0 - saver.take_time()
    saver.take_cpu()
    window.restart()

    rss, nvml = measure.RssPeak(), measure.NvmlProcessPeak()
    session.reset_peak()
    if session.on_gpu:
        nvml.start()
    rss.reset()
    times = []
    cpu0 = time.process_time()
    window.mark_start()
    t_measured = time.perf_counter()
    for i in range(warmup_end, total):
        times.append(one_step(i))
    saved_time, saved_cpu = saver.take_time(), saver.take_cpu()
    measured = time.perf_counter() - t_measured - saved_time
    cpu_time = time.process_time() - cpu0 - saved_cpu
    rss_peak = rss.read()
    nvml_peak = nvml.stop() if session.on_gpu else None
    fw_peak = session.framework_peak()

    notes = list(session.notes) + notes + [n for n in (rss.note, nvml.note) if n]
    if meta is not None:
        notes.append(f"resumed from checkpoint at step {start} of {total}: timing figures cover this "
                     f"attempt's {len(times)} measured steps, after its own {warmup_end - start} warm-up steps"
                     + ("; losses span all attempts" if train else ""))
        if not times:
            notes.append("no measured steps in this attempt: the checkpoint left none after the warm-up")
    if session.on_gpu:
        peak = nvml_peak if nvml_peak is not None else fw_peak
    else:
        peak = rss_peak
    losses, loss_last = state["losses"], state["loss_last"]
    result = {
        "model": spec.model,
        "framework": spec.framework,
        "mode": spec.mode,
        "execution": spec.execution,
        "device": "gpu" if session.on_gpu else "cpu",
        "device_name": session.device_name,
        "batch_size": batch,
        "steps": spec.steps,
        "warmup_steps": spec.warmup_steps,
        "image_size": size,
        "data": spec.data_dir or "synthetic",
        "samples_per_second": len(times) * batch / measured if times and measured > 0 else None,
        "step_time_p50_s": measure.percentile(times, 50),
        "step_time_p95_s": measure.percentile(times, 95),
        "step_time_mean_s": sum(times) / len(times) if times else None,
        "warmup_time_s": warmup_time,
        "wall_time_s": time.perf_counter() - t_start,
        "measured_cpu_time_s": cpu_time,
        "peak_memory_bytes": peak,
        "framework_peak_memory_bytes": fw_peak,
        "nvml_peak_memory_bytes": nvml_peak,
        "rss_peak_bytes": rss_peak,
        "params": session.params,
        "framework_version": session.framework_version,
        "threads": session.threads,
        "loss_first": losses[0] if train and losses else None,
        "loss_last": loss_last if train else None,
        "losses": losses if train else None,
        "memory_fraction": memory_fraction,
        "seed": spec.seed,
        "notes": notes,
        "resumed_from_step": start if meta is not None else None,
        "checkpoints_saved": saver.count,
        "checkpoint_time_s": saver.total_time,
    }
    assert tuple(result) == RESULT_KEYS
    return result


def _say(line: str) -> None:
    """One line of the run's log (the scheduler's task captures stdout into the job's log)."""
    print(line, flush=True)


class _StepLog:
    """Prints a progress line about every `total // LOG_LINES` steps, at most every
    LOG_MIN_INTERVAL_S and at least every LOG_MAX_INTERVAL_S; always the attempt's
    first step and the last one."""

    def __init__(self, total: int, start: int):
        self.total, self.first = total, start + 1
        self.every = max(1, total // LOG_LINES)
        self.last_t: float | None = None

    def maybe_print(self, p: Progress) -> None:
        now = time.monotonic()
        since = None if self.last_t is None else now - self.last_t
        due = (p.step == self.first or p.step == self.total or since is None
               or (since >= LOG_MIN_INTERVAL_S and (p.step % self.every == 0 or since >= LOG_MAX_INTERVAL_S)))
        if due:
            _say(format_progress(p))
            self.last_t = now


class _Saver:
    """Decides when to checkpoint (every N steps, every T seconds, on request) and saves."""

    def __init__(self, hooks: RunHooks, spec: WorkloadSpec, session, total: int, start: int):
        self.hooks, self.spec, self.session, self.total = hooks, spec, session, total
        self.last_step, self.last_t = start, time.monotonic()
        self.was_requested = False
        self.count, self.total_time = 0, 0.0
        self._time = self._cpu = 0.0  # since the last take_*

    def due(self, step: int) -> bool:
        h = self.hooks
        if not h.checkpoint_dir:
            return False
        requested = bool(h.checkpoint_requested()) if h.checkpoint_requested is not None else False
        edge, self.was_requested = requested and not self.was_requested, requested
        if edge:  # the server is about to preempt: save now, even at the last step
            return True
        if step >= self.total:  # done: the job ends now, a checkpoint would be removed unused
            return False
        if h.checkpoint_every_steps and step - self.last_step >= h.checkpoint_every_steps:
            return True
        return bool(h.checkpoint_every_s) and time.monotonic() - self.last_t >= h.checkpoint_every_s

    def save(self, step: int, losses: list[float], loss_last: float | None) -> None:
        t, c = time.perf_counter(), time.process_time()
        checkpoint.save(self.hooks.checkpoint_dir, self.spec, self.session, step, self.total, losses, loss_last,
                        attempt=self.hooks.attempt, may_commit=self.hooks.may_commit)
        dt = time.perf_counter() - t
        self._time += dt
        self._cpu += time.process_time() - c
        self.total_time += dt
        self.count += 1
        self.last_step, self.last_t = step, time.monotonic()
        _say(f"checkpoint saved at step {step} ({dt:.1f} s)")
        if self.hooks.on_checkpoint is not None:
            self.hooks.on_checkpoint(step)

    def take_time(self) -> float:
        out, self._time = self._time, 0.0
        return out

    def take_cpu(self) -> float:
        out, self._cpu = self._cpu, 0.0
        return out
