"""`fairgpu simulate`: replay a trace under five policies on a virtual clock and compare them.

Thin over scheduler.sim: read or generate a trace, pick the cluster and account tree (the
trace's own, the options', or the live server's with --from-db), run quota's policy under
each chosen policy, print a table (or --json keyed by policy name) and optionally a plot.

With --from-db and no --trace, the trace is the server's own job history
(scheduler.sim.history), replayed under the server's policy settings ("live") and, with
--set, under the changed tree too ("live+set"), beside what really happened ("actual").
The changes are never written. Jobs left out are counted on stderr by reason; a run that
leaves out every job exits 1. A malformed --set is a usage error (2); an unknown account
or a value out of range is a domain error (1).
"""
from __future__ import annotations

import click

from scheduler.cli.common import domain_errors, emit, info, json_option

POLICY_NAMES = ("fifo", "static", "fair-share-no-history", "fair-share", "finish-time")
FORMATS = ("auto", "csv", "json", "philly", "pai")


def _read_trace(path, fmt, spg, pai_jobs, pai_groups, institution):
    from scheduler.sim import readers, trace

    if fmt == "auto":
        fmt = "csv" if path.lower().endswith(".csv") else "json"
    if fmt == "csv":
        return trace.read_csv(path, spg)
    if fmt == "json":
        return trace.read_json(path, spg)
    if fmt == "philly":
        return readers.read_philly(path, spg)
    return readers.read_pai(path, pai_jobs, pai_groups, institution, spg)


def _cluster(gpus, gpus_per_node, spg, gpu_type):
    from quota import Capacity, NodeCapacity

    full, rest = divmod(gpus, gpus_per_node)
    nodes = [NodeCapacity(f"node{i:04d}", gpus_per_node, spg, gpu_type) for i in range(full)]
    if rest:
        nodes.append(NodeCapacity(f"node{full:04d}", rest, spg, gpu_type))
    return Capacity(tuple(nodes))


def _from_db(url, with_history: bool):
    """The live specs, capacity and policy settings, and the job history if asked: one read."""
    from scheduler.cli.common import db_session, existing_database
    from scheduler.services.accounts import account_specs
    from scheduler.services.capacity import load_capacity
    from scheduler.services.settings import policy_settings
    from scheduler.sim.history import read_history
    from scheduler.store import utcnow

    existing_database(url)
    with db_session(url) as session:
        history = read_history(session, utcnow()) if with_history else None
        return account_specs(session), load_capacity(session), policy_settings(session), history


def _changes(texts):
    from scheduler.sim.history import BadChange, parse_change

    try:
        return [parse_change(t) for t in texts]
    except BadChange as exc:
        raise click.UsageError(str(exc)) from None


def _say_left_out(skipped: dict[str, int], prefix: str = "  ") -> None:
    for why, n in sorted(skipped.items()):
        info(f"{prefix}left out {n} jobs: {why}")


def _reasons(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))


@click.command()
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="A trace file; without one a synthetic trace is generated.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Trace format: fairgpu csv/json, Philly cluster_job_log, or PAI 2020 pai_task_table.")
@click.option("--pai-jobs", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PAI pai_job_table.csv (gives each task's user and submit time).")
@click.option("--pai-groups", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PAI pai_group_tag_table.csv (for --institution group).")
@click.option("--institution", type=click.Choice(["user", "group"]), default="user", show_default=True,
              help="PAI: what counts as the institution.")
@click.option("--jobs", type=click.IntRange(min=1), default=10_000, show_default=True, help="Synthetic: jobs.")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True,
              help="Synthetic: span of the arrivals.")
@click.option("--institutions", type=click.IntRange(min=1), default=20, show_default=True,
              help="Synthetic: institutions.")
@click.option("--load", type=click.FloatRange(min=0, min_open=True), default=0.9, show_default=True,
              help="Synthetic: offered load (slice-seconds asked / capacity).")
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic: random seed.")
@click.option("--gpus", type=click.IntRange(min=1), default=100, show_default=True,
              help="Cluster GPUs (unless the trace or --from-db gives the cluster).")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--slices-per-gpu", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--gpu-type", default="T4", show_default=True)
@click.option("--from-db", "db_url", default=None, metavar="URL",
              help="Use the live server's account tree, capacity and policy settings as they stand; "
                   "without --trace, replay its own job history and compare with what really happened.")
@click.option("--set", "set_texts", multiple=True, metavar="ACCOUNT.FIELD=VALUE",
              help="With --from-db: what if ACCOUNT's weight, guaranteed or max (none: no cap) were VALUE "
                   "(repeatable; never written).")
@click.option("--policy", "policies", type=click.Choice(POLICY_NAMES), multiple=True,
              help="Policies to run (repeatable; default all five).")
@click.option("--algorithm", type=click.Choice(["classic", "fair-tree"]), default=None,
              help="Fair-share factor algorithm (default: the server's with --from-db, else classic).")
@click.option("--half-life-days", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Usage decay half-life (default: the server's with --from-db, else 7).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG comparison.")
@json_option
@domain_errors
def simulate(trace_path, fmt, pai_jobs, pai_groups, institution, jobs, days, institutions, load, seed, gpus,
             gpus_per_node, slices_per_gpu, gpu_type, db_url, set_texts, policies, algorithm, half_life_days,
             plot_path, as_json):
    """Compare scheduling policies on a trace, on a virtual clock, with quota's own policy code."""
    import json
    from dataclasses import replace

    if plot_path:
        from scheduler.cli.plotting import check_plot_path

        check_plot_path(plot_path)  # before the runs, not after them
    if set_texts and not db_url:
        raise click.UsageError("--set changes the live tree: it needs --from-db")
    changes = _changes(set_texts)
    from quota import AccountTree
    from quota.usage import DEFAULT_HALF_LIFE_S
    from scheduler.sim.engine import SimOptions
    from scheduler.sim.history import actual_metrics, slice_hours, what_if_tree
    from scheduler.sim.report import (
        TABLE_COLUMNS,
        configs_for,
        institution_comparison,
        institution_rows,
        run_configs,
        table_rows,
        to_json,
    )
    from scheduler.sim.synthetic import synthetic
    from scheduler.sim.trace import TraceError

    history = changed = settings = None
    if db_url:
        specs, capacity, settings, history = _from_db(db_url, with_history=not trace_path)
        if capacity.total_slices == 0:
            raise click.ClickException("the database declares no capacity (fairgpu admin capacity set)")
        tree = AccountTree.build(specs)
        if not tree.leaves():
            raise click.ClickException("the database has no accounts (fairgpu admin account add)")
        changed = what_if_tree(specs, changes, capacity.total_slices) if changes else None
    if history is not None:
        trace = history.trace
        info(f"history: {history.read} jobs on record, {len(trace.jobs)} to replay")
        if not trace.jobs:
            why = f"all {history.read} were left out ({_reasons(history.skipped)})" if history.read else "there are none"
            raise click.ClickException(f"no job history to replay: {why}")
    else:
        try:
            if trace_path:
                trace = _read_trace(trace_path, fmt, slices_per_gpu, pai_jobs, pai_groups, institution)
            else:
                trace = synthetic(jobs=jobs, days=days, institutions=institutions, gpus=gpus,
                                  slices_per_gpu=slices_per_gpu, gpus_per_node=gpus_per_node, load=load, seed=seed,
                                  gpu_type=gpu_type)
        except TraceError as exc:
            raise click.ClickException(str(exc)) from None
        if not trace.jobs:
            raise click.ClickException(f"trace {trace.name} has no jobs that can run")
    if not db_url:
        tree = trace.default_tree()
        capacity = trace.capacity or _cluster(gpus, gpus_per_node, slices_per_gpu, gpu_type)
    info(f"trace {trace.name}: {len(trace.jobs)} jobs, {len(trace.institutions())} accounts; cluster "
         f"{capacity.total_slices} slices on {len(capacity.nodes)} nodes")
    for why, n in sorted(trace.skipped.items()):
        info(f"  left out {n} jobs: {why}" if history is not None else f"  skipped {n} rows: {why}")
    if changes:
        info(f"what if: {', '.join(c.text for c in changes)} (runs named +set; nothing is written)")
    if settings is not None:
        half_life_s = half_life_days * 86400.0 if half_life_days else settings.half_life_s
        algorithm = algorithm or settings.config.algorithm
    else:
        half_life_s = half_life_days * 86400.0 if half_life_days else DEFAULT_HALF_LIFE_S
    options = SimOptions(half_life_s=half_life_s)
    if history is not None and not policies:  # the server's own policy, as its settings say
        configs = {"live": replace(settings.config, algorithm=algorithm)}
    else:
        configs = configs_for(list(policies) or None, algorithm)

    def progress(r):
        info(f"  {r.policy}: {r.events} events, {r.cycles} cycles ({r.skipped_cycles} skipped), "
             f"{r.wall_s:.1f} s, {r.events_per_s:,.0f} events/s")
        _say_left_out({why: n for why, n in r.skipped_jobs.items() if why not in trace.skipped}, "    ")

    results = {}
    for name, cfg in configs.items():
        results.update(run_configs(trace, tree, capacity, {name: cfg}, options, progress))
        if changed is not None:
            results.update(run_configs(trace, changed, capacity, {f"{name}+set": cfg}, options, progress))
    first = next(iter(results.values()))
    dropped = {why: n for why, n in first.skipped_jobs.items() if why not in trace.skipped}
    if sum(dropped.values()) >= len(trace.jobs):
        raise click.ClickException(f"all {len(trace.jobs)} jobs of trace {trace.name} were left out "
                                   f"({_reasons(dropped)}): nothing to compare")
    actual = hours = None
    if history is not None:
        actual = actual_metrics(history.jobs, tree, capacity, options.samples)
        hours = slice_hours(history.jobs, tree)
    columns = [_readable_key(c) for c in TABLE_COLUMNS]
    if as_json:
        click.echo(json.dumps(to_json(results, actual, hours), indent=2))
    elif actual is not None:
        emit(readable(table_rows(results, actual)), False, columns,
             title="history: what really happened and the replay")
        rows = readable(institution_comparison(results, actual, hours))
        emit(rows, False, list(rows[0]) if rows else [],
             title="per institution: real slice-hours, wait p50/p95, contended share ratio")
    else:
        emit(readable(table_rows(results)), False, columns, title=f"{trace.name}: policies compared")
        rows = readable(institution_rows(results))
        emit(rows, False, list(rows[0]) if rows else [], title="wait p50/p95, largest institutions")
    if plot_path:
        from scheduler.sim.plot import plot_comparison

        plot_comparison(results, plot_path, title=f"{trace.name}: {len(trace.jobs)} jobs, "
                                                  f"{capacity.total_slices} slices")
        info(f"wrote {plot_path}")


def _readable_key(key: str) -> str:
    return key[:-2] if key.endswith("_s") and key != "wall_s" else key


def readable(rows: list[dict]) -> list[dict]:
    """The comparison's rows for people: times (``*_s`` seconds, and (p50, p95) pairs) as
    durations (``45s``, ``1h05m``, ``2d03h``: a short history's waits do not read 0.01
    hours), keys without ``_s``; other figures as they are (the table rounds them)."""
    import math

    from scheduler.cli.formatting import duration

    def span(x) -> str:
        return duration(x) if isinstance(x, (int, float)) and math.isfinite(x) else "-"

    out = []
    for row in rows:
        shown = {}
        for key, value in row.items():
            if isinstance(value, tuple):
                shown[key] = "/".join(span(x) for x in value)
            elif _readable_key(key) != key:
                shown[_readable_key(key)] = span(value)
            else:
                shown[key] = value
        out.append(shown)
    return out
