"""Slurm's job-control verbs at the terminal, thin over the API (routes_control):
cancel (scancel), hold, release, requeue, update (scontrol) and capacity (sinfo).

Results go to stdout; every failure is one line and exit 1 (the client's), click's usage
errors exit 2. Imports nothing of the server: httpx through `Api` only.
"""
from __future__ import annotations

import json

import click

from scheduler.cli.client import Api, url_option
from scheduler.cli.common import emit, json_option

CAPACITY = ["node", "gpu_type", "gpus", "slices_total", "slices_used", "slices_free", "state", "reason"]


def _done(verb: str, answer: dict) -> None:
    ids = answer["ids"]
    click.echo("\n".join(f"job {i} {verb}" for i in ids) if ids else f"no job {verb}")


@click.command()
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--state", "states", multiple=True, type=click.Choice(["PENDING", "RUNNING"], case_sensitive=False),
              help="Every job of yours in this state (as scancel --state).")
@click.option("--account", default=None, metavar="NAME", help="Only this account's subtree.")
@click.option("--array", "array", type=int, default=None, metavar="ID", help="A whole job array (its first id).")
@url_option
def cancel(job_ids, states, account, array, url):
    """Cancel jobs, like scancel: IDs, a whole --array, or --state/--account filters."""
    if not job_ids and array is None and not states and account is None:
        raise click.MissingParameter("or --array, --state, --account", param_hint="'JOB_IDS...'",
                                     param_type="argument")
    if len(job_ids) == 1 and array is None and not states and account is None:
        data = Api.from_settings(url).call("POST", f"/v1/jobs/{job_ids[0]}/cancel")
        click.echo(f"job {data['id']} {data['state']}")
        return
    body = {"ids": list(job_ids) or None, "array": array, "state": [s.upper() for s in states] or None,
            "account": account}
    _done("CANCELLED", Api.from_settings(url).call("POST", "/v1/control/cancel",
                                                    body={k: v for k, v in body.items() if v is not None}))


def _verb(name: str, verb: str, doc: str):
    @click.command(name, help=doc)
    @click.argument("job_ids", nargs=-1, type=int, required=True)
    @url_option
    def command(job_ids, url):
        _done(verb, Api.from_settings(url).call("POST", f"/v1/control/{name}", body={"ids": list(job_ids)}))

    return command


hold = _verb("hold", "held", "Hold pending jobs: never started until released (scontrol hold).")
release = _verb("release", "released", "Release held jobs (scontrol release).")
requeue = _verb("requeue", "requeued", "Put running, failed, cancelled or timed-out jobs back in the queue "
                                       "(scontrol requeue).")


@click.command()
@click.argument("job_id", type=int)
@click.option("--time", "time_limit", default=None, metavar="T",
              help="New time limit (as submit --time); a running job's can only be lowered.")
@click.option("--slices", type=int, default=None, metavar="K", help="New slices (a pending job).")
@json_option
@url_option
def update(job_id, time_limit, slices, as_json, url):
    """Change a pending job's time limit or slices, or lower a running job's time limit
    (scontrol update)."""
    body = {}
    if time_limit is not None:
        from scheduler.services.validate import parse_time_limit

        body["time_limit_s"] = parse_time_limit(time_limit)
    if slices is not None:
        body["slices"] = slices
    if not body:
        raise click.UsageError("give --time or --slices")
    data = Api.from_settings(url).call("PATCH", f"/v1/jobs/{job_id}", body=body)
    click.echo(json.dumps(data, indent=2) if as_json else
               f"job {data['id']}: {data['slices']} slices, time limit {data['time_limit_s']} s")


@click.command()
@json_option
@url_option
def capacity(as_json, url):
    """Nodes and their slices: total, used, free, GPU type and state (sinfo)."""
    emit(Api.from_settings(url).call("GET", "/v1/capacity"), as_json, CAPACITY)
