"""`fairgpu bench`: rerun the study's table on this machine (thin over `workloads.bench`).

Invariants: importing this module imports no framework (rows run in worker
processes). Results go to stdout, messages and the progress bar to stderr: on a
terminal a rich bar naming the row being measured, elsewhere a line per row.
Bad input is one line on stderr and exit 1 (`click.ClickException`), checked
before any row runs. A row measured while the machine's load average was above
the cores given to this process gets a warning on stderr (and `loaded` in its row).
"""
from __future__ import annotations

import contextlib
import time

import click

# `--threads` and `--repeats` ranges, in quota.limits' form (checked as a job's numbers are).
THREADS_MAX = 1024
REPEATS_MAX = 100


def _what(job_or_row: dict) -> str:
    spec = job_or_row.get("spec", job_or_row)
    return f"{job_or_row['section']} {spec['model']} {spec['framework']} {spec['device']}"


@contextlib.contextmanager
def progress_bar(err, jobs: list[dict]):
    """While the rows run: a rich progress bar on stderr naming the row being measured now
    (rows come back in the plan's order), its count and the time spent, with a spinner
    that moves while a row takes minutes; on a stderr that is not a terminal (a log, CI),
    one line per row as it finishes. Yields the ``on_row`` callback for ``workloads.bench.run``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tty = err.is_terminal
    if not tty:
        err.print(f"measuring {len(jobs)} rows", highlight=False)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True, disable=not tty) as progress:
        yield RowProgress(err, jobs, progress, tty)


class RowProgress:
    """``on_row``: counts a finished row, warns about it, and names the next one."""

    def __init__(self, err, jobs: list[dict], progress, tty: bool):
        self.err, self.jobs, self.progress, self.tty = err, jobs, progress, tty
        self.done = 0
        self.started = time.monotonic()
        self.task = progress.add_task(f"measuring {_what(jobs[0])}" if jobs else "", total=len(jobs))

    def __call__(self, row: dict) -> None:
        from workloads import bench as wb

        self.done += 1
        if "error" in row:
            self.err.print(f"[yellow]warning[/yellow]: {_what(row)} failed: {row['error']}")
        for line in wb.load_warnings([row]):
            self.err.print(f"[yellow]warning[/yellow]: {line}", highlight=False, soft_wrap=True)
        if not self.tty:
            self.err.print(f"[{self.done}/{len(self.jobs)}] {_what(row)} measured, "
                           f"{time.monotonic() - self.started:.0f} s so far", highlight=False)
        following = f"measuring {_what(self.jobs[self.done])}" if self.done < len(self.jobs) else "done"
        self.progress.update(self.task, advance=1, description=following)



def _in_range(option: str, value, rng) -> None:
    """The range is quota.limits', as for a submitted job; `option` names it in the message."""
    from quota.limits import LimitError

    try:
        if value is not None:
            rng.check(value, option)
    except LimitError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--models", default=None, metavar="LIST", help="Comma list of conv6,vgg16,resnet18,cyclegan (default all).")
@click.option("--frameworks", default=None, metavar="LIST", help="Comma list of pytorch,tensorflow (default: those installed).")
@click.option("--devices", default=None, metavar="LIST", help="Comma list of cpu,gpu (default cpu, plus gpu when NVML sees one).")
@click.option("--quick", is_flag=True, help="Few steps, batch 32, CycleGAN at 64 px: all CPU rows in minutes.")
@click.option("--steps", type=int, default=None, help="Measured training steps per row.")
@click.option("--warmup", type=int, default=None, help="Warm-up steps per row (excluded from figures).")
@click.option("--batch-size", type=int, default=None, help="Training batch for the CIFAR models (CycleGAN keeps 1).")
@click.option("--image-size", type=int, default=None, help="CycleGAN image size (default 256; --quick 64).")
@click.option("--threads", type=int, default=None, metavar="N",
              help="CPU threads per framework (default: the cores given to this process).")
@click.option("--repeats", type=int, default=1, show_default=True, metavar="R",
              help="Run each row R times; report the median and the spread (min-max).")
@click.option("--no-latency", is_flag=True, help="Skip the four-way inference latency comparison.")
@click.option("--cifar10-dir", type=click.Path(file_okay=False), default=None, help="Folder with CIFAR-10 python batches.")
@click.option("--horse2zebra-dir", type=click.Path(file_okay=False), default=None, help="Folder with trainA/ and trainB/.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV on stdout.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write bar charts to FILE.png.")
def bench(models, frameworks, devices, quick, steps, warmup, batch_size, image_size, threads, repeats,
          no_latency, cifar10_dir, horse2zebra_dir, as_json, as_csv, plot_path) -> None:
    """Rerun the study's table: training throughput per model x framework x device,
    GPU/CPU speedup, and inference latency four ways (PyTorch eager, torch.compile,
    TF eager, XLA) at batch 1 and 32."""
    import dataclasses

    from rich.console import Console

    from workloads import bench as wb
    from workloads import registry, report

    err = Console(stderr=True)
    if as_json and as_csv:
        raise click.ClickException("choose one of --json and --csv")
    from quota import limits

    for option, value, rng in (("--steps", steps, limits.STEPS), ("--warmup", warmup, limits.WARMUP_STEPS),
                               ("--batch-size", batch_size, limits.BATCH_SIZE),
                               ("--image-size", image_size, limits.IMAGE_SIZE),
                               ("--threads", threads, limits.Range("threads", 1, THREADS_MAX, "threads")),
                               ("--repeats", repeats, limits.Range("repeats", 1, REPEATS_MAX, "runs"))):
        _in_range(option, value, rng)
    try:
        model_list = wb.parse_list(models, registry.MODELS, "model")
        fw_list = wb.parse_list(frameworks, registry.FRAMEWORKS, "framework")
        dev_list = wb.parse_list(devices, ("cpu", "gpu"), "device") if devices else None
        if image_size is not None:
            registry.check_image_size("cyclegan", image_size)
    except ValueError as e:
        raise click.ClickException(str(e)) from None

    installed = wb.installed_frameworks()
    missing = [f for f in fw_list if f not in installed]
    if frameworks and missing:
        raise click.ClickException(f"{', '.join(missing)} not installed; installed: {', '.join(installed) or 'none'}")
    fw_list = tuple(f for f in fw_list if f in installed)
    if not fw_list:
        raise click.ClickException("neither pytorch nor tensorflow is installed")
    gpus = wb.nvml_gpu_count()
    if dev_list is None:
        dev_list = ("cpu", "gpu") if gpus else ("cpu",)
    elif "gpu" in dev_list and not gpus:
        raise click.ClickException("--devices gpu: no GPU on this machine (NVML finds no driver or device)")

    base = wb.QUICK if quick else wb.FULL
    settings = dataclasses.replace(
        base,
        train_steps=steps or base.train_steps,
        warmup_steps=base.warmup_steps if warmup is None else warmup,
        batch_size=batch_size or base.batch_size,
        cyclegan_size=image_size or base.cyclegan_size)
    cfg = wb.BenchConfig(models=model_list, frameworks=fw_list, devices=dev_list, settings=settings,
                         latency=not no_latency, cifar10_dir=cifar10_dir, horse2zebra_dir=horse2zebra_dir,
                         threads=threads or wb.default_threads(), repeats=repeats)
    try:
        jobs = wb.plan(cfg)
    except ValueError as e:
        raise click.ClickException(str(e)) from None

    with progress_bar(err, jobs) as on_row:
        rows = wb.run(jobs, on_row)
    wb.training_rows(rows)
    wb.add_latency_ratios(rows)
    if as_json:
        click.echo(report.to_json(rows))
    elif as_csv:
        click.echo(report.to_csv(rows), nl=False)
    else:
        out = Console()
        if not out.is_terminal:  # files and pipes get the whole table, not 80 columns
            out = Console(width=170)
        report.render(rows, out, threads=cfg.threads, cores=wb.default_threads(), repeats=repeats)
    if plot_path:
        report.plot(rows, plot_path)
        err.print(f"plot written to {plot_path}")
    if rows and all("error" in r for r in rows):
        raise click.ClickException("every row failed (see the warnings above)")
