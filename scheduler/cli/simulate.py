"""`fairgpu simulate`: replay a trace under five policies on a virtual clock and compare them.

Thin over scheduler.sim: read or generate a trace, pick the cluster and account tree (the
trace's own, the options', or the live server's with --from-db), run quota's policy under
each chosen policy, print a table (or --json keyed by policy name) and optionally a plot.
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


def _from_db(url):
    from scheduler.cli.common import open_engine
    from scheduler.services.accounts import load_tree
    from scheduler.services.capacity import load_capacity
    from scheduler.store import session_scope

    with session_scope(open_engine(url)) as session:
        return load_tree(session), load_capacity(session)


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
              help="Use the live server's account tree and capacity as they stand.")
@click.option("--policy", "policies", type=click.Choice(POLICY_NAMES), multiple=True,
              help="Policies to run (repeatable; default all five).")
@click.option("--algorithm", type=click.Choice(["classic", "fair-tree"]), default="classic", show_default=True,
              help="Fair-share factor algorithm.")
@click.option("--half-life-days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True,
              help="Usage decay half-life.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write a PNG comparison.")
@json_option
@domain_errors
def simulate(trace_path, fmt, pai_jobs, pai_groups, institution, jobs, days, institutions, load, seed, gpus,
             gpus_per_node, slices_per_gpu, gpu_type, db_url, policies, algorithm, half_life_days, plot_path,
             as_json):
    """Compare scheduling policies on a trace, on a virtual clock, with quota's own policy code."""
    import json

    if plot_path:
        _need_matplotlib()  # before the runs, not after them
    from quota.usage import DEFAULT_HALF_LIFE_S
    from scheduler.sim.engine import SimOptions
    from scheduler.sim.report import compare, institution_rows, table_rows, to_json, TABLE_COLUMNS
    from scheduler.sim.synthetic import synthetic
    from scheduler.sim.trace import TraceError

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
    if db_url:
        tree, capacity = _from_db(db_url)
        if capacity.total_slices == 0:
            raise click.ClickException("the database declares no capacity (fairgpu admin capacity set)")
        if not tree.leaves():
            raise click.ClickException("the database has no accounts (fairgpu admin account add)")
    else:
        tree = trace.default_tree()
        capacity = trace.capacity or _cluster(gpus, gpus_per_node, slices_per_gpu, gpu_type)
    info(f"trace {trace.name}: {len(trace.jobs)} jobs, {len(trace.institutions())} accounts; cluster "
         f"{capacity.total_slices} slices on {len(capacity.nodes)} nodes")
    for why, n in sorted(trace.skipped.items()):
        info(f"  skipped {n} rows: {why}")
    options = SimOptions(half_life_s=half_life_days * 86400.0 if half_life_days else DEFAULT_HALF_LIFE_S)

    def progress(r):
        info(f"  {r.policy}: {r.events} events, {r.cycles} cycles ({r.skipped_cycles} skipped), "
             f"{r.wall_s:.1f} s, {r.events_per_s:,.0f} events/s")
        for why, n in sorted(r.skipped_jobs.items()):
            if why not in trace.skipped:
                info(f"    left out {n} jobs: {why}")

    results = compare(trace, tree, capacity, list(policies) or None, options, algorithm, progress)
    if as_json:
        click.echo(json.dumps(to_json(results), indent=2))
    else:
        emit(table_rows(results), False, TABLE_COLUMNS, title=f"{trace.name}: policies compared")
        rows = institution_rows(results)
        emit(rows, False, list(rows[0]) if rows else [], title="wait p50/p95 (hours), largest institutions")
    if plot_path:
        from scheduler.sim.plot import plot_comparison

        plot_comparison(results, plot_path, title=f"{trace.name}: {len(trace.jobs)} jobs, "
                                                  f"{capacity.total_slices} slices")
        info(f"wrote {plot_path}")


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException("--plot needs matplotlib: pip install 'fairgpu[plot]'") from None
