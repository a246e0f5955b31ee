"""The institutions' commands: login, submit, jobs, job show, cancel, logs (thin over the API).

Results go to stdout (ids, tables, JSON); notes to stderr. Every failure is one
line and exit 1; click's usage errors exit 2.
"""
from __future__ import annotations

import json

import click

from scheduler.cli.client import Api, url_option
from scheduler.cli.common import domain_errors, info, json_option
from scheduler.vocab import FRAMEWORKS, MODES  # standard library only: fine at import time

JOB_KEYS = ("id", "account", "model", "framework", "slices", "state", "reason", "submitted_at", "started_at",
            "finished_at", "node", "gpu", "time_limit_s", "progress", "position", "estimated_start")


@click.command()
@click.option("--url", "url", default=None, metavar="URL", help="The fairgpu server, e.g. http://host:8470.")
@click.option("--token", prompt=True, hide_input=True, help="Your API token (asked for if not given).")
def login(url, token):
    """Check URL and TOKEN against the server and save them for the other commands."""
    from scheduler.cli.client import DEFAULT_URL, save_config

    api = Api((url or DEFAULT_URL).rstrip("/"), token.strip())
    who = api.call("GET", "/v1/whoami")
    path = save_config(api.url, api.token)
    as_whom = "an admin" if who["admin"] else who["account"]
    click.echo(f"logged in to {api.url} as {as_whom}")
    info(f"saved to {path} (readable by you only)")


@click.command()
@click.argument("model")
@click.option("--framework", type=click.Choice(FRAMEWORKS), default=None,
              help="Framework for the study's models (not for hold).")
@click.option("--slices", type=int, required=True, metavar="K", help="GPU slices to run on.")
@click.option("--account", default=None, metavar="NAME", help="Leaf account to charge (default: your token's).")
@click.option("--mode", type=click.Choice(MODES), default="train", show_default=True)
@click.option("--steps", type=int, default=None, metavar="N", help="Training or inference steps.")
@click.option("--batch-size", type=int, default=None, metavar="B")
@click.option("--image-size", type=int, default=None, metavar="N", help="Input size (CycleGAN).")
@click.option("--seconds", type=float, default=None, metavar="S", help="hold: how long to hold the slices.")
@click.option("--count", type=int, default=None, metavar="N",
              help="A job array: N identical jobs, all or none (prints one id a line).")
@click.option("--time", "time_limit", default=None, metavar="T",
              help="Wall-time limit of each attempt, as Slurm's --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, "
                   "D-HH:MM:SS, or 90s, 10m, 2h, 3d (default: your account's).")
@click.option("--working-dir", type=click.Path(exists=True, file_okay=False), default=None, metavar="DIR",
              help="script: the directory to run COMMAND in (packed and sent; see docs/institutions.md).")
@click.option("--after", default=None, metavar="ID[:ID]",
              help="Start only after these jobs SUCCEEDED (Slurm's --dependency=afterok).")
@click.argument("command", nargs=-1)
@json_option
@url_option
@domain_errors
def submit(model, framework, slices, account, mode, steps, batch_size, image_size, seconds, count, time_limit,
           working_dir, after, command, as_json, url):
    """Submit a job: MODEL is conv6, vgg16, resnet18, cyclegan, hold (with --seconds), or
    script, your own code: `fairgpu submit script --slices K --working-dir DIR -- COMMAND [ARGS...]`."""
    from scheduler.services.validate import job_numbers, parse_time_limit

    body = {"model": model, "framework": framework, "slices": slices, "mode": mode, "account": account,
            "steps": steps, "batch_size": batch_size, "image_size": image_size, "seconds": seconds, "count": count,
            "time_limit_s": parse_time_limit(time_limit) if time_limit is not None else None}
    if after is not None:
        try:
            body["after"] = [int(i) for i in after.split(":")]
        except ValueError:
            raise click.BadParameter(f"job ids separated by ':' (got {after!r})", param_hint="--after") from None
    job_numbers(body)  # the server checks them too; here they must be finite to be sent as JSON
    api = Api.from_settings(url)
    if model == "script":
        body.update(_upload(api, working_dir, command, account))
    elif working_dir or command:
        raise click.UsageError("--working-dir and COMMAND are for script jobs")
    created = api.call("POST", "/v1/jobs", body={k: v for k, v in body.items() if v is not None})
    for warning in created.get("warnings", ()):
        info(f"warning: {warning}")
    if count is not None:
        click.echo(json.dumps({"ids": created["ids"]}) if as_json else "\n".join(map(str, created["ids"])))
        return
    click.echo(json.dumps({"id": created["id"]}) if as_json else created["id"])


def _upload(api: Api, working_dir: str | None, command: tuple[str, ...], account: str | None) -> dict:
    """Ask whether the account may upload (cheap: no body), then pack and send a script
    job's working directory; the submission's script fields. A refused account costs no
    packing and no upload."""
    from scheduler.runtime import archive

    if not working_dir or not command:
        raise click.UsageError("a script job needs --working-dir DIR and a COMMAND after --")
    params = {"account": account} if account else None
    api.call("GET", "/v1/uploads/allowed", params=params)  # refused: one line, exit 1, nothing sent
    try:
        data = archive.pack(working_dir)
    except archive.ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    sent = api.call("POST", "/v1/uploads", content=data, content_type="application/octet-stream", params=params)
    info(f"sent {working_dir} ({sent['files']} files, {sent['bytes'] / 1024:.0f} KiB packed)")
    return {"command": list(command), "upload": sent["upload"]}


def _fields(ctx, param, value) -> list[str]:
    from scheduler.cli.views import DEFAULT_FORMAT, parse_format

    try:
        return parse_format(DEFAULT_FORMAT if value is None else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@click.option("--account", default=None, metavar="NAME", help="Only this account and its sub-accounts.")
@click.option("--format", "fields", default=None, metavar="FIELDS", callback=_fields,
              help="Comma-separated fields to show, as squeue's --format (default: the compact "
                   "id,account,model,slices,state,node_reason,progress; see docs/institutions.md).")
@click.option("--state", "states", default=None, metavar="STATES",
              help="Only these states, comma-separated (as squeue -t); finished ones need no --all.")
@click.option("--since", default=None, metavar="WHEN",
              help="Only jobs not finished before WHEN (as sacct -S): ISO 8601, or 2h, 7d before now.")
@json_option
@url_option
def jobs(show_all, account, fields, states, since, as_json, url):
    """List your jobs, like squeue: pending and running (with --all, finished too), with a
    running job's progress and a pending job's position and estimated start."""
    params = {"all": "true" if show_all else "false"}
    if account:
        params["account"] = account
    params.update({k: v for k, v in (("state", states), ("since", since)) if v})
    rows = [{k: r.get(k) for k in JOB_KEYS} for r in Api.from_settings(url).call("GET", "/v1/jobs", params=params)]
    if as_json:
        from scheduler.cli.formatting import times_in

        click.echo(json.dumps(times_in(rows), indent=2))
        return
    from scheduler.cli.views import columns, table_row

    click.echo("\n".join(columns([table_row(r) for r in rows], fields)))


@click.group()
def job() -> None:
    """One job: `fairgpu job show ID`."""


RESULTS = (("throughput (samples/s)", "samples_per_second"), ("step time p50 (s)", "step_time_p50_s"),
           ("step time mean (s)", "step_time_mean_s"), ("peak GPU memory (bytes)", "nvml_peak_memory_bytes"),
           ("peak memory (bytes)", "peak_memory_bytes"))


@job.command("show")
@click.argument("job_id", type=int)
@json_option
@url_option
def show(job_id, as_json, url):
    """Everything known about a job, with its results once it has finished."""
    from scheduler.cli.formatting import times_in

    data = times_in(Api.from_settings(url).call("GET", f"/v1/jobs/{job_id}"))  # epoch *_at as ISO 8601
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from scheduler.cli.views import FINISHED, show_value

    finished = data.get("state") in FINISHED
    for key, value in data.items():
        if key != "result":
            click.echo(f"{key + ':':16} {show_value(key, value, finished=finished)}")
    result = data.get("result") or {}
    if result:
        click.echo("results:")
        shown = set()
        for label, key in RESULTS:
            if result.get(key) is not None:
                click.echo(f"  {label}: {show_value(key, result[key])}")
                shown.add(key)
        for key, value in result.items():
            if key not in shown and key != "log" and not isinstance(value, (dict, list)):
                click.echo(f"  {key}: {show_value(key, value)}")


@click.command()
@click.argument("job_id", type=int)
@url_option
def cancel(job_id, url):
    """Cancel a pending or running job."""
    data = Api.from_settings(url).call("POST", f"/v1/jobs/{job_id}/cancel")
    click.echo(f"job {data['id']} {data['state']}")


@click.command()
@click.argument("job_id", type=int)
@click.option("--tail", type=int, default=None, metavar="N", help="Only the last N lines of output.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new events and output until the job ends (Ctrl-C stops).")
@click.option("--poll", "poll_s", type=float, default=1.0, hidden=True, help="Seconds between polls with --follow.")
@url_option
@domain_errors
def logs(job_id, tail, follow, poll_s, url):
    """A job's history (submitted, admitted, started, preempted, finished...), then its
    task's own output, attempt by attempt."""
    import time

    from scheduler.cli.views import show_logs
    from scheduler.services.validate import limits, optional

    optional(limits.LOG_TAIL, tail, "tail")  # the server checks it too
    api = Api.from_settings(url)
    show_logs(lambda params: api.call("GET", f"/v1/jobs/{job_id}/logs", params=params), tail=tail, follow=follow,
              echo=click.echo, sleep=time.sleep, poll_s=poll_s)
