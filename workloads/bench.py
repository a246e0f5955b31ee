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
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from workloads import registry
from workloads.runner import WorkloadSpec

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

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def _data_dir(cfg: BenchConfig, model: str) -> str | None:
    return cfg.horse2zebra_dir if model == "cyclegan" else cfg.cifar10_dir


def plan(cfg: BenchConfig) -> list[dict]:
    """Jobs for the worker, grouped by framework: training rows then latency rows."""
    s = cfg.settings
    jobs = []
    for framework in cfg.frameworks:
        for device in cfg.devices:
            for model in cfg.models:
                batch = 1 if model == "cyclegan" else s.batch_size
                size = s.cyclegan_size if model == "cyclegan" else None
                spec = WorkloadSpec(model=model, framework=framework, mode="train", steps=s.train_steps,
                                    warmup_steps=s.warmup_steps, batch_size=batch, image_size=size,
                                    device=device, data_dir=_data_dir(cfg, model))
                jobs.append({"section": "train", "spec": spec.to_dict()})
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
                        jobs.append({"section": "latency", "spec": spec.to_dict()})
    return jobs


def _row_from(job: dict, msg: dict) -> dict:
    if "result" in msg:
        row = {k: v for k, v in msg["result"].items() if k != "losses"}
    else:
        spec = job["spec"]
        row = {k: spec[k] for k in ("model", "framework", "mode", "execution", "device", "batch_size")}
        row["error"] = msg["error"]
    row["section"] = job["section"]
    return row


def run(jobs: list[dict], on_row=None) -> list[dict]:
    """Run `jobs` in one worker process per framework; call `on_row(row)` as rows arrive."""
    rows: list[dict] = []
    by_framework: dict[str, list[dict]] = {}
    for job in jobs:
        by_framework.setdefault(job["spec"]["framework"], []).append(job)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    for framework, group in by_framework.items():
        with tempfile.TemporaryFile("w+") as errlog:
            proc = subprocess.Popen([sys.executable, "-m", "workloads.worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=errlog, text=True, env=env)
            proc.stdin.write(json.dumps([{"spec": j["spec"]} for j in group]))
            proc.stdin.close()
            done = 0
            for line in proc.stdout:
                msg = json.loads(line)
                row = _row_from(group[msg["index"]], msg)
                rows.append(row)
                done += 1
                if on_row:
                    on_row(row)
            proc.wait()
            if done < len(group):  # the worker died: say why, mark what is left
                errlog.seek(0)
                tail = [ln for ln in errlog.read().splitlines() if ln.strip()][-1:] or [f"exit {proc.returncode}"]
                for job in group[done:]:
                    row = _row_from(job, {"error": f"{framework} worker died: {tail[0][:200]}"})
                    rows.append(row)
                    if on_row:
                        on_row(row)
    return rows


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
