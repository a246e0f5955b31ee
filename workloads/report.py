"""Rendering of bench rows: rich tables, JSON, CSV and the matplotlib figure.

Invariants:
- Renders only what the rows hold; a missing figure prints as "-", never 0.
- `to_json`/`to_csv` emit every row (training and latency) with the same keys
  as the runner's result, so scripts read one format.
- matplotlib is imported only inside `plot()`, with the non-GUI Agg backend.
- The table's title names the threads, the cores and the repeats; a repeated
  row's samples/s shows its median and (min-max); a row measured under load
  (load average above the cores) is flagged "loaded" in its own column.
"""
from __future__ import annotations

import csv
import io
import json

from workloads import registry
from workloads.bench import LATENCY_BATCHES, LATENCY_WAYS, latency_table, training_rows


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:,.2f}"


def _rate(r: dict) -> str:
    text = f"{r['samples_per_second']:,.1f}"
    spread = r.get("samples_per_second_spread")
    if r.get("repeats", 1) > 1 and spread:
        text += f" ({spread[0]:,.1f}-{spread[1]:,.1f})"
    return text


def _load(r: dict) -> str:
    return f"[yellow]loaded {r['load']:.1f}[/yellow]" if r.get("loaded") else ""


def title_line(threads: int | None, cores: int | None, repeats: int = 1) -> str:
    parts = ["warm-up excluded"]
    if threads:
        word = "thread" if threads == 1 else "threads"
        parts.append(f"{threads} {word} of {cores} cores" if cores else f"{threads} {word}")
    if repeats > 1:
        parts.append(f"median of {repeats} runs, min-max")
    return "; ".join(parts)


def render(rows: list[dict], console, threads: int | None = None, cores: int | None = None,
           repeats: int = 1) -> None:
    from rich.table import Table

    train = training_rows(rows)
    t = Table(title=f"Training throughput ({title_line(threads, cores, repeats)})")
    for col in ("model", "framework", "device", "batch", "img", "samples/s", "step p50 ms", "step p95 ms",
                "peak MiB", "params", "GPU/CPU", "load"):
        t.add_column(col, justify="left" if col in ("model", "framework", "device") else "right")
    for r in train:
        if "error" in r:
            t.add_row(r["model"], r["framework"], r["device"], str(r["batch_size"] or "-"), "",
                      f"[red]error[/red]: {r['error'][:60]}", "", "", "", "", "", _load(r))
            continue
        t.add_row(r["model"], r["framework"], r["device"], str(r["batch_size"]), str(r["image_size"]),
                  _rate(r), _ms(r["step_time_p50_s"]), _ms(r["step_time_p95_s"]),
                  _mib(r["peak_memory_bytes"]), f"{r['params']:,}", _num(r.get("gpu_speedup"), ".1f"), _load(r))
    console.print(t)
    ok = [r for r in train if "error" not in r]
    if ok:
        r = ok[0]
        console.print(f"device: {r['device_name']}; threads: {r['threads']}; "
                      + "; ".join(sorted({f"{x['framework']} {x['framework_version']}" for x in ok})))

    lat = latency_table(rows)
    if not lat:
        return
    loaded = sorted({f"{r['model']} {r['framework']} {r['execution']} b{r['batch_size']}"
                     for r in rows if r["section"] == "latency" and r.get("loaded")})
    t = Table(title="Inference latency p50, ms (TF/PT < 1: TensorFlow faster)",
              caption=f"measured under load: {', '.join(loaded)}" if loaded else None)
    for col in ("model", "device", "batch") + tuple(w[3] for w in LATENCY_WAYS) + (
            "TF/PT eager", "XLA/PT compile", "XLA/PT eager"):
        t.add_column(col, justify="left" if col in ("model", "device") else "right")
    for e in lat:
        t.add_row(e["model"], e["device"], str(e["batch_size"]),
                  *[_ms(e.get(f"{fw}_{ex}_s")) for fw, ex, *_ in LATENCY_WAYS],
                  _num(e["tf_over_pt_eager"], ".2f"), _num(e["tf_over_pt_compiled"], ".2f"),
                  _num(e["xla_over_pt_eager"], ".2f"))
    console.print(t)
    errors = [r for r in rows if r["section"] == "latency" and "error" in r]
    for r in errors:
        console.print(f"[red]latency row failed[/red] {r['model']} {r['framework']} {r['execution']} "
                      f"batch {r['batch_size']}: {r['error']}")


def to_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2)


def to_csv(rows: list[dict]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    return buf.getvalue()


def plot(rows: list[dict], path: str) -> None:
    """Throughput, GPU/CPU speedup and the two latency comparisons, as bars, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in training_rows(rows) if "error" not in r]
    models = [m for m in registry.MODELS if any(r["model"] == m for r in train + rows)]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    series = sorted({(r["framework"], r["device"]) for r in train})
    _bars(axes[0][0], models, [f"{fw} {dev}" for fw, dev in series],
          [[_pick(train, m, framework=fw, device=dev, key="samples_per_second") for m in models]
           for fw, dev in series], "samples/s (log)", "Training throughput", log=True)
    speed = [r for r in train if "gpu_speedup" in r]
    if speed:
        fws = sorted({r["framework"] for r in speed})
        _bars(axes[0][1], models, fws, [[_pick(speed, m, framework=fw, key="gpu_speedup") for m in models]
                                         for fw in fws], "GPU / CPU samples/s", "GPU speedup (training)")
    else:
        axes[0][1].axis("off")
        axes[0][1].text(0.5, 0.5, "GPU speedup: no GPU rows in this run\n(nothing measured, nothing drawn)",
                        ha="center", va="center", fontsize=12)
    lat = latency_table(rows)
    for ax, batch in zip(axes[1], LATENCY_BATCHES):
        entries = [e for e in lat if e["batch_size"] == batch and e["device"] == "cpu"] or \
                  [e for e in lat if e["batch_size"] == batch]
        if not entries:
            ax.axis("off")
            continue
        dev = entries[0]["device"]
        entries = [e for e in entries if e["device"] == dev]
        ms = [m for m in models if any(e["model"] == m for e in entries)]
        vals = [[next((e.get(f"{fw}_{ex}_s") * 1e3 for e in entries if e["model"] == m
                       and e.get(f"{fw}_{ex}_s") is not None), None) for m in ms] for fw, ex, *_ in LATENCY_WAYS]
        _bars(ax, ms, [w[2] for w in LATENCY_WAYS], vals, "p50 latency, ms (log)",
              f"Inference latency, batch {batch}, {dev}", log=True)
    names = sorted({r["device_name"] for r in train})
    fig.suptitle("fairgpu bench: " + "; ".join(names), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pick(rows, model, key, **match):
    for r in rows:
        if r["model"] == model and all(r.get(k) == v for k, v in match.items()):
            return r.get(key)
    return None


def _bars(ax, groups, labels, values, ylabel, title, log=False):
    n = max(len(labels), 1)
    width = 0.8 / n
    for i, (label, vals) in enumerate(zip(labels, values)):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        heights = [v if v is not None else float("nan") for v in vals]
        bars = ax.bar(xs, heights, width, label=label)
        for bar, v in zip(bars, vals):
            if v is not None:
                ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
