"""One entry point for a workload, used by scheduler jobs and `fairgpu bench`.

    spec = WorkloadSpec(model="resnet18", framework="pytorch", mode="train", steps=20)
    result = run_workload(spec, memory_fraction=None)

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
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from workloads import data, measure, registry

EXECUTIONS = ("default", "eager", "compiled")
# The runner stages at most this many distinct batches and cycles over them.
MAX_STAGED_BATCHES = 16
MAX_LOSSES_KEPT = 1000

RESULT_KEYS = (
    "model", "framework", "mode", "execution", "device", "device_name", "batch_size", "steps",
    "warmup_steps", "image_size", "data", "samples_per_second", "step_time_p50_s",
    "step_time_p95_s", "step_time_mean_s", "warmup_time_s", "wall_time_s", "measured_cpu_time_s", "peak_memory_bytes",
    "framework_peak_memory_bytes", "nvml_peak_memory_bytes", "rss_peak_bytes", "params",
    "framework_version", "threads", "loss_first", "loss_last", "losses", "memory_fraction",
    "seed", "notes",
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


def run_workload(spec: WorkloadSpec, memory_fraction: float | None = None) -> dict:
    """Run `spec` and return its result record (see module docstring)."""
    if memory_fraction is not None and not (0 < memory_fraction <= 1):
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction!r}")
    t_start = time.perf_counter()
    session = _backend(spec.framework).Session(spec, memory_fraction)
    batch, size = spec.resolved_batch_size, spec.resolved_image_size
    total = spec.warmup_steps + spec.steps
    n_batches = min(total, MAX_STAGED_BATCHES)
    batches = session.stage(data.make_batches(spec.model, batch, n_batches, size, spec.data_dir, spec.seed))
    losses: list[float] = []

    t0 = time.perf_counter()
    for i in range(spec.warmup_steps):
        loss = session.step(batches[i % n_batches])
        if loss is not None:
            losses.append(loss)
    warmup_time = time.perf_counter() - t0

    rss, nvml = measure.RssPeak(), measure.NvmlProcessPeak()
    session.reset_peak()
    if session.on_gpu:
        nvml.start()
    rss.reset()
    times = []
    cpu0 = time.process_time()
    t_measured = time.perf_counter()
    for i in range(spec.warmup_steps, total):
        t = time.perf_counter()
        loss = session.step(batches[i % n_batches])
        times.append(time.perf_counter() - t)
        if loss is not None:
            losses.append(loss)
    measured = time.perf_counter() - t_measured
    cpu_time = time.process_time() - cpu0
    rss_peak = rss.read()
    nvml_peak = nvml.stop() if session.on_gpu else None
    fw_peak = session.framework_peak()

    notes = list(session.notes) + [n for n in (rss.note, nvml.note) if n]
    if session.on_gpu:
        peak = nvml_peak if nvml_peak is not None else fw_peak
    else:
        peak = rss_peak
    train = spec.mode == "train"
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
        "samples_per_second": spec.steps * batch / measured,
        "step_time_p50_s": measure.percentile(times, 50),
        "step_time_p95_s": measure.percentile(times, 95),
        "step_time_mean_s": sum(times) / len(times),
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
        "loss_last": losses[-1] if train and losses else None,
        "losses": losses[:MAX_LOSSES_KEPT] if train else None,
        "memory_fraction": memory_fraction,
        "seed": spec.seed,
        "notes": notes,
    }
    assert tuple(result) == RESULT_KEYS
    return result
