"""The study's table: plan the rows, run them in worker processes, collect rows.

Invariants:
- Importing this module imports no framework; rows run in `workloads.worker`
  subprocesses, one per framework, one after another (never side by side, so
  timings do not share the CPU).
- A row is a runner result (minus the per-step loss list) plus `section`
  ("train" or "latency"); a row that failed has `error` and no figures.
- `--quick` settings keep every CPU row of all four models, both frameworks
  and the four-way latency comparison under 10 minutes on 2 cores.
- Derived figures (GPU/CPU speedup, TF/PyTorch latency ratios) are computed
  only from rows measured in this run, never filled in.
- Every row runs with the same thread count (`BenchConfig.threads`, default the
  cores given to this process) and records it (`threads`, `cores`).
- With `repeats` R > 1 a row is run R times back to back and its figures are the
  medians, with each figure's spread `[min, max]` beside it (`*_spread`); one
  failed run makes the row an error row.
- The 1-minute load average is sampled before, during (every `LOAD_POLL_S`) and
  after each row; a row during which it rose above `cores` is marked
  `loaded: true` with its highest `load`: others competed for the cores, so its
  figures understate the machine. The load includes the bench's own threads.
"""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from workloads import measure, registry
from workloads.runner import WorkloadSpec

# Figures a repeated row reports as the median of its runs, with their [min, max].
REPEATED_FIGURES = ("samples_per_second", "step_time_p50_s", "step_time_p95_s", "step_time_mean_s")
LOAD_POLL_S = 1.0

# (framework, execution, long name, short name) of the four-way latency comparison.
LATENCY_WAYS = (
    ("pytorch", "eager", "PyTorch eager", "PT eager"),
    ("pytorch", "compiled", "torch.compile", "PT compile"),
    ("tensorflow", "eager", "TF eager", "TF eager"),
    ("tensorflow", "compiled", "tf.function(jit_compile=True)", "TF XLA"),
)
LATENCY_BATCHES = (1, 32)


@dataclass(frozen=True)
class Settings:
    train_steps: int
    warmup_steps: int
    latency_steps: int
    latency_warmup: int
    batch_size: int | None  # None: each model's reference batch
    cyclegan_size: int | None  # None: 256


FULL = Settings(train_steps=20, warmup_steps=3, latency_steps=20, latency_warmup=3,
                batch_size=None, cyclegan_size=None)
# CycleGAN keeps its reference batch of 1; classifiers train at batch 32.
QUICK = Settings(train_steps=5, warmup_steps=2, latency_steps=5, latency_warmup=2,
                 batch_size=32, cyclegan_size=64)


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = registry.MODELS
    frameworks: tuple[str, ...] = registry.FRAMEWORKS
    devices: tuple[str, ...] = ("cpu",)
    settings: Settings = FULL
    latency: bool = True
    cifar10_dir: str | None = None
    horse2zebra_dir: str | None = None
    threads: int | None = None  # None: default_threads()
    repeats: int = 1


def default_threads() -> int:
    """The cores given to this process (its CPU affinity), not the machine's count."""
    return measure.usable_cpus()


def parse_list(value: str | None, choices: tuple[str, ...], what: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b') in `choices` order; ValueError names the unknown item."""
    if value is None or value.strip().lower() == "all":
        return choices
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    if not items:
        raise ValueError(f"empty {what} list")
    for item in items:
        if item not in choices:
            raise ValueError(f"unknown {what} {item!r}; choose from {', '.join(choices)}")
    return tuple(c for c in choices if c in items)


def installed_frameworks() -> tuple[str, ...]:
    modules = {"pytorch": "torch", "tensorflow": "tensorflow"}
    return tuple(f for f in registry.FRAMEWORKS if importlib.util.find_spec(modules[f]) is not None)


def nvml_gpu_count() -> int:
    """GPUs NVML reports (0 without a driver). Cheap: imports no framework."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except (pynvml.NVMLError, OSError):
        return 0


def _data_dir(cfg: BenchConfig, model: str) -> str | None:
    return cfg.horse2zebra_dir if model == "cyclegan" else cfg.cifar10_dir


def plan(cfg: BenchConfig) -> list[dict]:
    """Jobs for the worker, grouped by framework: training rows then latency rows."""
    s = cfg.settings
    extra = {"threads": cfg.threads or default_threads(), "repeats": cfg.repeats}
    jobs = []
    for framework in cfg.frameworks:
        for device in cfg.devices:
            for model in cfg.models:
                batch = 1 if model == "cyclegan" else s.batch_size
                size = s.cyclegan_size if model == "cyclegan" else None
                spec = WorkloadSpec(model=model, framework=framework, mode="train", steps=s.train_steps,
                                    warmup_steps=s.warmup_steps, batch_size=batch, image_size=size,
                                    device=device, data_dir=_data_dir(cfg, model))
                jobs.append({"section": "train", "spec": spec.to_dict(), **extra})
        if not cfg.latency:
            continue
        for device in cfg.devices:
            for model in cfg.models:
                size = s.cyclegan_size if model == "cyclegan" else None
                for fw, execution, *_ in LATENCY_WAYS:
                    if fw != framework:
                        continue
                    for batch in LATENCY_BATCHES:
                        spec = WorkloadSpec(model=model, framework=framework, mode="infer",
                                            steps=s.latency_steps, warmup_steps=s.latency_warmup,
                                            batch_size=batch, image_size=size, device=device,
                                            execution=execution, data_dir=_data_dir(cfg, model))
                        jobs.append({"section": "latency", "spec": spec.to_dict(), **extra})
    return jobs


def _row_from(job: dict, msg: dict) -> dict:
    if "result" in msg:
        row = {k: v for k, v in msg["result"].items() if k != "losses"}
    else:
        spec = job["spec"]
        row = {k: spec[k] for k in ("model", "framework", "mode", "execution", "device", "batch_size")}
        row["threads"] = job.get("threads")
        row["error"] = msg["error"]
    row["section"] = job["section"]
    return row


def merge_runs(job: dict, msgs: list[dict]) -> dict:
    """One row from a job's repeated runs: medians of REPEATED_FIGURES and their [min, max]
    spread; the peaks' maximum. Any failed run makes it that run's error row."""
    failed = [m for m in msgs if "result" not in m]
    if failed:
        return _row_from(job, failed[0])
    runs = [_row_from(job, m) for m in msgs]
    row = dict(runs[0])
    for key in REPEATED_FIGURES:
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = statistics.median(values) if values else None
        row[f"{key}_spread"] = [min(values), max(values)] if values else None
    for key in ("peak_memory_bytes", "framework_peak_memory_bytes", "nvml_peak_memory_bytes", "rss_peak_bytes"):
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = max(values) if values else None
    row["repeats"] = len(runs)
    return row


class LoadWatch:
    """The highest 1-minute load average seen since the last `take()`, polled every
    `every_s` in a daemon thread while the watch is open (`with LoadWatch(...)`)."""

    def __init__(self, loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
                 every_s: float = LOAD_POLL_S):
        self._loadavg, self._every = loadavg, every_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._max = self._read()
        self._thread = threading.Thread(target=self._poll, name="bench-load", daemon=True)

    def _read(self) -> float:
        try:
            return float(self._loadavg()[0])
        except OSError:  # no load average on this platform
            return 0.0

    def _sample(self) -> float:
        now = self._read()
        with self._lock:
            self._max = max(self._max, now)
        return now

    def _poll(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def take(self) -> float:
        """The highest load since the last take (or the start), sampled once more now."""
        now = self._sample()
        with self._lock:
            out, self._max = self._max, now
        return out

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(jobs: list[dict], on_row=None, *, loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
        cores: int | None = None) -> list[dict]:
    """Run `jobs` in one worker process per framework; call `on_row(row)` as rows arrive.

    A job with `repeats` R is run R times in a row and gives one row (`merge_runs`);
    its `threads` go to the worker. Each row gets `cores`, `load` (the highest 1-minute
    load average seen while it ran) and `loaded` (load above cores)."""
    cores = cores or default_threads()
    rows: list[dict] = []
    by_framework: dict[str, list[dict]] = {}
    for job in jobs:
        by_framework.setdefault(job["spec"]["framework"], []).append(job)
    with LoadWatch(loadavg) as watch:
        for framework, group in by_framework.items():
            rows += _run_group(framework, group, watch, cores, on_row)
    return rows


def _run_group(framework: str, group: list[dict], watch: LoadWatch, cores: int, on_row) -> list[dict]:
    rows: list[dict] = []

    def emit(row: dict) -> None:
        load = watch.take()
        row.update(cores=cores, load=round(load, 2), loaded=load > cores)
        rows.append(row)
        if on_row:
            on_row(row)

    runs = [(g, job) for g, job in enumerate(group) for _ in range(max(1, int(job.get("repeats") or 1)))]
    threads = group[0].get("threads")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads))
    msgs: dict[int, list[dict]] = {}
    emitted = 0
    with tempfile.TemporaryFile("w+") as errlog:
        proc = subprocess.Popen([sys.executable, "-m", "workloads.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errlog, text=True, env=env)
        proc.stdin.write(json.dumps([{"spec": job["spec"], "threads": job.get("threads")} for _, job in runs]))
        proc.stdin.close()
        for line in proc.stdout:
            msg = json.loads(line)
            g, job = runs[msg["index"]]
            msgs.setdefault(g, []).append(msg)
            if len(msgs[g]) == max(1, int(job.get("repeats") or 1)):
                emit(merge_runs(job, msgs[g]))
                emitted += 1
        proc.wait()
        if emitted < len(group):  # the worker died: say why, mark what is left
            errlog.seek(0)
            tail = [ln for ln in errlog.read().splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
            for job in group[emitted:]:
                emit(_row_from(job, {"error": f"{framework} worker died: {tail[0][:200]}"}))
    return rows


def load_warnings(rows: list[dict]) -> list[str]:
    """One line per row measured while the load average was above the cores it had."""
    return [f"{r['section']} {r['model']} {r['framework']} {r['device']}: load average {r['load']:.1f} "
            f"above {r['cores']} cores while it ran (other processes competed; figures are low)"
            for r in rows if r.get("loaded")]


# ------------------------------------------------------------------ derived figures
def training_rows(rows: list[dict]) -> list[dict]:
    """Training rows, each GPU row with `gpu_speedup` over the same model+framework on CPU."""
    train = [r for r in rows if r["section"] == "train"]
    cpu = {(r["model"], r["framework"]): r for r in train if r["device"] == "cpu" and "error" not in r}
    for r in train:
        base = cpu.get((r["model"], r["framework"]))
        if r["device"] == "gpu" and base and "error" not in r:
            r["gpu_speedup"] = r["samples_per_second"] / base["samples_per_second"]
    return train


def latency_table(rows: list[dict]) -> list[dict]:
    """One entry per (model, device, batch): p50 latency of each way and the TF/PyTorch ratios."""
    lat = [r for r in rows if r["section"] == "latency" and "error" not in r]
    table: dict[tuple, dict] = {}
    for r in lat:
        key = (r["model"], r["device"], r["batch_size"])
        entry = table.setdefault(key, {"model": r["model"], "device": r["device"], "batch_size": r["batch_size"]})
        entry[f"{r['framework']}_{r['execution']}_s"] = r["step_time_p50_s"]
    for e in table.values():
        pt_e, pt_c = e.get("pytorch_eager_s"), e.get("pytorch_compiled_s")
        tf_e, tf_x = e.get("tensorflow_eager_s"), e.get("tensorflow_compiled_s")
        e["tf_over_pt_eager"] = tf_e / pt_e if tf_e and pt_e else None
        e["tf_over_pt_compiled"] = tf_x / pt_c if tf_x and pt_c else None
        e["xla_over_pt_eager"] = tf_x / pt_e if tf_x and pt_e else None
    order = {m: i for i, m in enumerate(registry.MODELS)}
    return sorted(table.values(), key=lambda e: (e["device"], order[e["model"]], e["batch_size"]))


def add_latency_ratios(rows: list[dict]) -> None:
    """Put `tf_over_pytorch_ratio` on each TF latency row (same device, batch and kind of execution)."""
    pt = {(r["model"], r["device"], r["batch_size"], r["execution"]): r["step_time_p50_s"]
          for r in rows if r["section"] == "latency" and r["framework"] == "pytorch" and "error" not in r}
    for r in rows:
        if r["section"] == "latency" and r["framework"] == "tensorflow" and "error" not in r:
            base = pt.get((r["model"], r["device"], r["batch_size"], r["execution"]))
            if base:
                r["tf_over_pytorch_ratio"] = r["step_time_p50_s"] / base
