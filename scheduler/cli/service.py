"""`fairgpu up` (the embedded server) and `fairgpu demo` (the main job)."""
from __future__ import annotations

import click

from scheduler.cli.common import db_option, domain_errors, info


@click.command()
@db_option
@click.option("--ray-address", default=None, envvar="RAY_ADDRESS", metavar="ADDR",
              help="Use an existing Ray cluster instead of starting a local one.")
@click.option("--gpus", type=int, default=None, metavar="N",
              help="Logical GPUs for the local Ray (machines without GPUs).")
@click.option("--gpu-type", default="T4", show_default=True, help="GPU type of the logical GPUs.")
@click.option("--slices-per-gpu", type=int, default=None, metavar="K",
              help="Slices per GPU (default: the GPU type's profile, T4: 4).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8470, show_default=True, help="API port (0: any free port).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where results and the admin token live (default: the user data dir).")
@click.option("--standby", is_flag=True,
              help="If another server runs the scheduler for this database, wait and take over "
                   "when its lease lapses (instead of exiting 1).")
@click.option("--lease-ttl", type=float, default=15.0, show_default=True, metavar="SECONDS",
              help="How long the leader lease lasts without a heartbeat: a standby takes over "
                   "this long after the leader stops answering.")
@click.option("--unsandboxed-scripts", is_flag=True,
              help="Accept script jobs on nodes where no sandbox can start; they then run with the "
                   "server's user's rights. Said at every start.")
@domain_errors
def up(db_url, ray_address, gpus, gpu_type, slices_per_gpu, host, port, state_dir, standby, lease_ttl,
       unsandboxed_scripts):
    """Start fairgpu on this machine: Ray, the scheduling loop, the API and /metrics."""
    import logging
    import os

    from scheduler.runtime.executor import RayUnavailable
    from scheduler.runtime.ray_session import SessionInUse
    from scheduler.server import Embedded, PortInUse, default_state_dir
    from scheduler.store.lease import LeaseHeld

    if gpus is not None and gpus < 0:
        raise click.BadParameter("must be >= 0", param_hint="--gpus")
    if slices_per_gpu is not None and slices_per_gpu < 1:
        raise click.BadParameter("must be >= 1", param_hint="--slices-per-gpu")
    if not 0 <= port <= 65535:
        raise click.BadParameter("must be 0-65535", param_hint="--port")
    if lease_ttl < 1:
        raise click.BadParameter("must be >= 1", param_hint="--lease-ttl")
    os.umask(0o077)  # what the server and its local Ray create (database, results, logs) is private
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = Embedded(db_url=db_url, state_dir=state_dir or default_state_dir(), ray_address=ray_address,
                      gpus=gpus, gpu_type=gpu_type, slices_per_gpu=slices_per_gpu, host=host, port=port,
                      lease_ttl_s=lease_ttl, standby=standby, unsandboxed_scripts=unsandboxed_scripts, say=info)

    def announce(s: Embedded) -> None:
        from scheduler.server import recovered_line

        line = None if s.standing_by else recovered_line(s.recovered)  # a standby says it once it took over
        if line:
            info(line)
        if s.admin_token:
            info(f"admin token written to {s.admin_token_path} (readable by you only)")
        info(f"fairgpu is up: API {s.url}  metrics {s.url}/metrics  (Ctrl-C to stop)")

    try:
        n = server.serve_foreground(announce)
    except (PortInUse, SessionInUse) as exc:
        raise click.ClickException(str(exc)) from None
    except LeaseHeld as exc:
        raise click.ClickException(f"{exc} (or start with --standby to wait for it)") from None
    except RayUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if server.lost is not None:  # already said, in one line, when it happened
        raise SystemExit(1)
    if n is None:
        info("stopped while standing by")
    else:
        info(f"stopped; {n} running job(s) queued again")


@click.command()
@click.option("--gpus", type=int, default=2, show_default=True, help="Logical T4 GPUs (4 slices each).")
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Length of each job.")
@click.option("--jobs-per-weight", type=int, default=24, show_default=True,
              help="Jobs per unit of weight (1:2:3 institutions).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the demo's API listens on.")
@click.option("--port", type=int, default=0, show_default=True,
              help="The demo's API port (0: any free port; the URL is printed).")
@domain_errors
def demo(gpus, seconds, jobs_per_weight, host, port):
    """Three institutions weighted 1:2:3 share logical GPUs: live table, then who got what."""
    from scheduler.demo import run_demo
    from scheduler.server import PortInUse

    if gpus < 1 or seconds <= 0 or jobs_per_weight < 1:
        raise click.UsageError("--gpus and --jobs-per-weight must be >= 1 and --seconds > 0")
    if not 0 <= port <= 65535:
        raise click.BadParameter("must be 0-65535", param_hint="--port")
    try:
        run_demo(gpus=gpus, seconds=seconds, jobs_per_weight=jobs_per_weight, host=host, port=port)
    except PortInUse as exc:
        raise click.ClickException(str(exc)) from None
