"""`fairgpu admin`: accounts and quotas, capacity, usage history, policy settings and jobs.

Every command validates before it writes and runs in one transaction, so bad input
writes nothing.
"""
from __future__ import annotations

import click

from scheduler.cli.common import (
    db_option,
    db_session,
    domain_errors,
    emit,
    info,
    json_option,
)
from scheduler.cli.tokens import token


@click.group()
def admin() -> None:
    """Administer accounts, quotas, capacity, usage, tokens and jobs."""


admin.add_command(token)


@admin.group()
def account() -> None:
    """Institutions and their sub-accounts, with weights, guarantees and caps."""


def _quota_options(required_weight: bool):
    def deco(f):
        f = click.option("--parent", default=None, metavar="NAME", help="Parent account (none: an institution).")(f)
        f = click.option("--max-pending", type=int, default=None, metavar="N", help="Limit on waiting jobs.")(f)
        f = click.option("--max", "cap", type=int, default=None, metavar="N", help="Cap on slices in use.")(f)
        f = click.option("--guaranteed", type=int, default=None, metavar="N", help="Guaranteed slices.")(f)
        f = click.option("--weight", type=float, required=required_weight, metavar="W",
                         help="Fair-share weight, relative to its siblings.")(f)
        return f
    return deco


def _inherited_options(on_set: bool):
    """--default-time, --max-time and --allow-scripts/--no-allow-scripts; on `set`, also the
    flags that make each inherited from the parent again."""
    def deco(f):
        if on_set:
            f = click.option("--inherit-scripts", is_flag=True, help="Inherit scripts from the parent again.")(f)
            f = click.option("--no-max-time", is_flag=True, help="Inherit the maximum time from the parent again.")(f)
            f = click.option("--no-default-time", is_flag=True,
                             help="Inherit the default time from the parent again.")(f)
        f = click.option("--allow-scripts/--no-allow-scripts", "allow_scripts", default=None,
                         help="May run its own code (default: as its parent; at the top: no).")(f)
        f = click.option("--max-time", default=None, metavar="T",
                         help="The longest --time a job may ask for (Slurm forms, e.g. 2-00:00 or 48h).")(f)
        f = click.option("--default-time", default=None, metavar="T",
                         help="Time limit of a job submitted without --time (Slurm forms, e.g. 1:00:00 or 1h).")(f)
        return f
    return deco


def _time(text: str | None, field: str):
    from scheduler.services.validate import parse_time_limit

    return None if text is None else parse_time_limit(text, field)


@account.command("add")
@click.argument("name")
@_quota_options(required_weight=True)
@_inherited_options(on_set=False)
@db_option
@domain_errors
def account_add(name, weight, guaranteed, cap, max_pending, parent, default_time, max_time, allow_scripts, db_url):
    """Add an account (an institution, or with --parent a department, project or user)."""
    from scheduler.services.accounts import add_account

    times = {"default_time_s": _time(default_time, "default_time"), "max_time_s": _time(max_time, "max_time")}
    with db_session(db_url) as session:
        add_account(session, name, weight=weight, guaranteed=guaranteed or 0, cap=cap, max_pending=max_pending,
                    parent=parent, allow_scripts=allow_scripts, **times)
    info(f"added account {name}")


@account.command("set")
@click.argument("name")
@_quota_options(required_weight=False)
@click.option("--no-max", is_flag=True, help="Remove the cap.")
@_inherited_options(on_set=True)
@db_option
@domain_errors
def account_set(name, weight, guaranteed, cap, max_pending, parent, no_max, default_time, max_time, allow_scripts,
                no_default_time, no_max_time, inherit_scripts, db_url):
    """Change an account's weight, guarantee, cap, pending limit, parent, times or scripts."""
    from scheduler.services.accounts import UNSET, set_account

    for given, clear, names in ((cap, no_max, "--max and --no-max"),
                                (default_time, no_default_time, "--default-time and --no-default-time"),
                                (max_time, no_max_time, "--max-time and --no-max-time"),
                                (allow_scripts, inherit_scripts, ("--allow-scripts/--no-allow-scripts and "
                                                                  "--inherit-scripts"))):
        if clear and given is not None:
            raise click.UsageError(f"{names} exclude each other")
    inherit = {"default_time_s": (no_default_time, _time(default_time, "default_time")),
               "max_time_s": (no_max_time, _time(max_time, "max_time")),
               "allow_scripts": (inherit_scripts, allow_scripts)}
    changes = {k: None if clear else v for k, (clear, v) in inherit.items() if clear or v is not None}
    with db_session(db_url) as session:
        set_account(session, name, weight=weight, guaranteed=guaranteed,
                    cap=None if no_max else (cap if cap is not None else UNSET),
                    max_pending=max_pending if max_pending is not None else UNSET,
                    parent=parent if parent is not None else UNSET, **changes)
    info(f"updated account {name}")


@account.command("list")
@json_option
@db_option
@domain_errors
def account_list(as_json, db_url):
    """List accounts in tree order, with the time limits and scripts setting in force (a
    value inherited from an ancestor names it in parentheses)."""
    from scheduler.services.accounts import list_accounts

    with db_session(db_url) as session:
        rows = list_accounts(session)
    if not as_json:
        for r in rows:
            r.update(_in_force(r))
            r["account"] = "  " * r["depth"] + r["account"]
    emit(rows, as_json, ["account", "weight", "guaranteed_slices", "max_slices", "max_pending", "default_time",
                         "max_time", "scripts"])


def _in_force(row: dict) -> dict:
    """The table's cells for the inherited settings: '2h', '1d (uni-north)', 'no'..."""
    from scheduler.services.validate import human_duration

    eff = row["effective"]

    def cell(key: str, text: str | None) -> str | None:
        source = eff["from"][key]
        return text if text is None or source in (None, row["account"]) else f"{text} ({source})"

    times = {k: cell(f"{k}_s", human_duration(eff[f"{k}_s"]) if eff[f"{k}_s"] is not None else None)
             for k in ("default_time", "max_time")}
    return {**times, "scripts": cell("allow_scripts", "yes" if eff["allow_scripts"] else "no")}


@account.command("remove")
@click.argument("name")
@db_option
@domain_errors
def account_remove(name, db_url):
    """Remove an account that has no sub-accounts and no jobs."""
    from scheduler.services.accounts import remove_account

    with db_session(db_url) as session:
        remove_account(session, name)
    info(f"removed account {name}")


@admin.group()
def capacity() -> None:
    """The GPUs fairgpu shares, per node."""


@capacity.command("set")
@click.option("--gpus", type=int, required=True, metavar="N", help="GPUs on the node.")
@click.option("--slices-per-gpu", type=int, default=None, metavar="K", help="Slices per GPU (default: per type).")
@click.option("--gpu-type", default="T4", show_default=True, metavar="T")
@click.option("--node", default="local", show_default=True, metavar="NAME")
@db_option
@domain_errors
def capacity_set(gpus, slices_per_gpu, gpu_type, node, db_url):
    """Declare a node's GPUs (the service discovers them from Ray instead)."""
    from scheduler.services.capacity import set_node
    from scheduler.store import utcnow

    with db_session(db_url) as session:
        row = set_node(session, node=node, gpus=gpus, slices_per_gpu=slices_per_gpu, gpu_type=gpu_type, at=utcnow())
    info(f"node {row.name}: {row.gpus} x {row.gpu_type}, {row.slices_per_gpu} slices each "
         f"({row.gpus * row.slices_per_gpu} slices)")


@capacity.command("list")
@json_option
@db_option
@domain_errors
def capacity_list(as_json, db_url):
    """List nodes and their slices."""
    from scheduler.services.capacity import list_nodes

    with db_session(db_url) as session:
        rows = list_nodes(session)
    emit(rows, as_json, ["node", "gpu_type", "gpus", "slices_per_gpu", "slices", "active", "source"])


@admin.group()
def usage() -> None:
    """Usage history in slice-seconds."""


@usage.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@db_option
@domain_errors
def usage_import(file, db_url):
    """Import FILE.csv with columns account,slice_seconds,at (ISO 8601), all or nothing."""
    from scheduler.services.usage import import_usage_csv

    with db_session(db_url) as session:
        n = import_usage_csv(session, file)
    info(f"imported {n} usage records from {file}")


@admin.group()
def settings() -> None:
    """Policy settings: half_life, algorithm, preemption, reclaim, host_memory_per_slice, max_processes."""


@settings.command("set")
@click.argument("key")
@click.argument("value")
@db_option
@domain_errors
def settings_set(key, value, db_url):
    """Set KEY to VALUE (e.g. half_life 7d, algorithm fair-tree, preemption off, reclaim entitlement,
    host_memory_per_slice 8GiB, max_processes 4096)."""
    from scheduler.services.settings import set_setting, show

    with db_session(db_url) as session:
        stored = set_setting(session, key, value)
    info(f"{key} = {show(key, stored)}")


@settings.command("list")
@json_option
@db_option
@domain_errors
def settings_list(as_json, db_url):
    """Show the policy settings in force (--json: as stored, host_memory_per_slice in bytes)."""
    from scheduler.services.settings import all_settings, show

    with db_session(db_url) as session:
        rows = [{"key": k, "value": v if as_json else show(k, v)} for k, v in all_settings(session).items()]
    emit(rows, as_json, ["key", "value"])


@admin.group()
def job() -> None:
    """Any account's jobs, straight on the database (the server may be down)."""


@job.command("cancel")
@click.argument("job_id", type=int)
@db_option
@domain_errors
def job_cancel(job_id, db_url):
    """Cancel job JOB_ID, waiting or running: with the server down too (e.g. a job that
    keeps stopping it). A running server stops its attempt, as for `fairgpu cancel`."""
    from scheduler.services.jobs_admin import cancel_job
    from scheduler.store import utcnow

    with db_session(db_url) as session:
        done = cancel_job(session, job_id, at=utcnow())
    info(done.describe())
