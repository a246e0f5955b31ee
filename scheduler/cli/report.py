"""`fairgpu report`: who used what over a period, and was it fair (services.report).

Two sources, one report, as for `fairgpu share`: with a server named (``--url``,
``FAIRGPU_URL`` or ``fairgpu login``) it asks ``GET /v1/report``, which limits an
institution to its own subtree; otherwise it reads the database (``--db``), the admin's
view. Output: a table and the cluster figures (default), ``--json`` (the list of
per-account rows), or ``--csv`` (the rows with the period, for chargeback); ``--plot
FILE`` also draws owed against held slices over time (matplotlib, imported there only).
Bad dates, and a plot that cannot be written (scheduler.cli.plotting), exit 1 with one
line, before anything is read or written. Tables round figures for people
(scheduler.cli.formatting); ``--json`` and ``--csv`` keep them exact.
"""
from __future__ import annotations

import sys
from datetime import datetime

import click

from scheduler.cli.common import (
    db_option,
    db_session,
    domain_errors,
    emit,
    info,
    json_option,
)
from scheduler.cli.formatting import when

# The table's short headers for the rows' keys (--json and --csv keep the keys).
TABLE = {"account": "account", "used_h": "slice_hours", "held_h": "held_slice_hours",
         "owed_h": "owed_slice_hours", "got": "got_share", "owed": "owed_share", "starved_h": "starved_hours",
         "succeeded": "jobs_succeeded", "failed": "jobs_failed", "cancelled": "jobs_cancelled",
         "timeout": "jobs_timeout", "preempted": "preemptions", "wait_p50_s": "wait_p50_s",
         "wait_p95_s": "wait_p95_s"}
PLOT_BUCKETS = 120
PLOT_MAX_ACCOUNTS = 12


@click.command()
@click.option("--since", default=None, metavar="DATE", help="Start: YYYY-MM-DD or an ISO time (default: the later "
                                                            "of 30 days before the end and the first record).")
@click.option("--until", default=None, metavar="DATE", help="End, excluded: YYYY-MM-DD or an ISO time (default "
                                                            "and at most: now).")
@click.option("--account", "under", default=None, metavar="NAME", help="Only this account and its sub-accounts.")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per account, with the period).")
@click.option("--plot", "plot_path", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="Also draw owed vs held slices per account over time into FILE (PNG, SVG, PDF).")
@db_option
@click.option("--url", "url", default=None, metavar="URL", help="Ask this fairgpu server (your own subtree).")
@domain_errors
def report(since, until, under, as_json, as_csv, plot_path, db_url, url):
    """Report each account's usage, owed vs got share, jobs, waits and starvation over a period."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    if plot_path:
        from scheduler.cli.plotting import check_plot_path

        check_plot_path(plot_path)  # before anything is read: a plot that cannot be written writes nothing
    from scheduler.cli.client import Api, api_configured

    buckets = PLOT_BUCKETS if plot_path else 0
    if url or (not db_url and api_configured()):
        params = {k: v for k, v in (("since", since), ("until", until), ("account", under)) if v}
        data = Api.from_settings(url).call("GET", "/v1/report", params={**params, "buckets": buckets})
    else:
        from scheduler.services import report as reports
        from scheduler.store import utcnow

        start, end = reports.period(since, until, utcnow())
        with db_session(db_url) as session:
            data = reports.report(session, since=start, until=end, under=under, buckets=buckets)
    rows = data["accounts"]
    if as_csv:
        _csv(data)
    elif as_json:
        emit(rows, True, list(TABLE.values()))
    else:
        emit([{short: r.get(key) for short, key in TABLE.items()} for r in rows], False, list(TABLE),
             title=f"{when(data['since'])} to {when(data['until'])}")
        click.echo(summary(data))
    if plot_path:
        plot(data, plot_path)
        info(f"wrote {plot_path}")


def summary(data: dict) -> str:
    """The cluster figures in a line, rounded for people (``--json`` keeps them exact)."""
    from scheduler.cli.formatting import figure

    util = data["utilisation"]
    return (f"capacity {data['capacity_slices']} slices ({figure(data['capacity_slice_hours'], trim=True)} "
            f"slice-hours), used {figure(data['slice_hours'], trim=True)} slice-hours, utilisation "
            f"{'-' if util is None else f'{util:.1%}'}, Jain's index {data['jain_index']:.3f}")


def _csv(data: dict) -> None:
    import csv

    out = csv.writer(sys.stdout, lineterminator="\n")
    keys = list(data["accounts"][0]) if data["accounts"] else ["account"]
    out.writerow(["since", "until", *keys])
    for row in data["accounts"]:
        out.writerow([data["since"], data["until"], *("" if row[k] is None else row[k] for k in keys)])


def plot(data: dict, path: str) -> None:
    """One panel per account (tree order, at most PLOT_MAX_ACCOUNTS): mean slices owed
    (dashed) and held (solid) per bucket of the timeline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["account"] for r in data["accounts"]][:PLOT_MAX_ACCOUNTS]
    timeline = data.get("timeline") or []
    starts = [datetime.fromisoformat(b["start"]) for b in timeline]
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 2.8 * rows), squeeze=False, sharex=True)
    for i, ax in enumerate(ax for line in axes for ax in line):
        if i >= len(names):
            ax.set_visible(False)
            continue
        name = names[i]
        ax.step(starts, [b["owed"].get(name, 0.0) for b in timeline], where="post", ls="--", color="black",
                lw=0.9, label="owed")
        ax.step(starts, [b["held"].get(name, 0.0) for b in timeline], where="post", color="tab:blue", label="held")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("slices")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"owed vs held slices, {data['since'][:16]} to {data['until'][:16]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
