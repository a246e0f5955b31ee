"""`fairgpu demo`: three institutions weighted 1:2:3 flood a shared pool of logical T4
slices through the real API; a live table shows each one's slices against its
entitlement; a summary says who got what versus what they were owed.

Runs the embedded server (SQLite, local Ray with logical GPUs) in a temporary state
directory unless one is given, so it leaves nothing behind. Its API listens on ``port``
(0: any free port) and the URL is printed, so the CLI can watch the same server.

The local Ray runs with token authentication, as Ray's default for a new local cluster;
the demo asks for it by name (``RAY_AUTH_MODE=token`` unless set), which is the same
cluster without Ray's notice that it chose the default.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from scheduler.vocab import HOLD

INSTITUTIONS = (("uni-alpha", 1.0), ("uni-beta", 2.0), ("uni-gamma", 3.0))


def setup_accounts(engine, clock, institutions=INSTITUTIONS) -> dict[str, str]:
    """Create the institutions and one token each; returns {name: raw token}."""
    from scheduler.services.accounts import add_account, get_account
    from scheduler.services.auth import issue_token
    from scheduler.services.errors import NotFound
    from scheduler.store import session_scope

    tokens = {}
    with session_scope(engine) as s:
        for name, weight in institutions:
            try:
                get_account(s, name)
            except NotFound:
                add_account(s, name, weight=weight)
            tokens[name] = issue_token(s, account=name, name="demo", expires_s=3600, at=clock())
    return tokens


def flood(url: str, tokens: dict[str, str], jobs: dict[str, int], seconds: float, slices: int = 1,
          array: bool = False) -> list[int]:
    """Each institution submits its jobs from its own client thread, as fast as it can:
    one request per job, or with `array` its jobs as one job array (`count`)."""
    import httpx

    ids: list[int] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(name: str) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=30) as c:
            body = {"model": HOLD, "slices": slices, "seconds": seconds}
            left = jobs[name]
            while left > 0:
                n = min(left, 1000) if array else 1
                r = c.post("/v1/jobs", json={**body, "count": n} if array else body)
                if r.status_code != 201:
                    errors.append(f"{name}: HTTP {r.status_code} {r.text[:200]}")
                    return
                left -= n
                with lock:
                    ids.extend(r.json()["ids"] if array else [r.json()["id"]])

    threads = [threading.Thread(target=client, args=(n,)) for n in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return ids


def job_intervals(engine, ids=None):
    from sqlmodel import select

    from scheduler.contention import Interval
    from scheduler.store import Account, Job, JobState, session_scope

    with session_scope(engine) as s:
        names = {a.id: a.name for a in s.exec(select(Account)).all()}
        q = select(Job).where(Job.state == JobState.SUCCEEDED)
        rows = [j for j in s.exec(q).all() if ids is None or j.id in ids]
    out, delays = [], []
    for j in rows:
        r = j.result or {}
        start = r.get("task_started_at", j.started_at.timestamp())
        out.append(Interval(names[j.account_id], j.slices, j.submitted_at.timestamp(), start,
                            r.get("task_finished_at", j.finished_at.timestamp())))
        if "ray_start_delay_s" in r:
            delays.append(r["ray_start_delay_s"])
    return out, delays


def live_table(server, started: float):
    from rich.table import Table

    view = server.publisher.view()
    table = Table(title=f"fairgpu demo: {time.time() - started:5.1f} s", header_style="bold")
    for col in ("institution", "weight", "entitled slices", "running slices", "waiting jobs", "fair-share F"):
        table.add_column(col, justify="right" if col != "institution" else "left")
    if view is None:
        return table
    for a in view.accounts:
        if a.parent is None:
            table.add_row(a.name, f"{a.weight:g}", f"{a.entitled_slices:.2f}", f"{a.allocated_slices:g}",
                          str(sum(a.pending_by_reason.values())), f"{a.fairshare_factor:.3f}")
    table.caption = (f"slices {view.capacity_slices - view.free_slices}/{view.capacity_slices} busy   "
                     f"Jain's index {view.jain_index:.3f}   Ray-side pending {view.ray_pending_tasks}")
    return table


def run_demo(*, gpus: int = 2, seconds: float = 2.0, jobs_per_weight: int = 24, state_dir: str | None = None,
             host: str = "127.0.0.1", port: int = 0, out=sys.stdout) -> "object":
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from scheduler.contention import summarise
    from scheduler.server import Embedded
    from scheduler.store import Job, JobState, session_scope

    console = Console(file=out, width=None if out.isatty() else 110)
    err = Console(stderr=True)
    tmp = tempfile.TemporaryDirectory(prefix="fairgpu-demo-") if state_dir is None else None
    root = Path(state_dir or tmp.name)
    server = Embedded(db_url=f"sqlite:///{root / 'fairgpu.db'}", state_dir=root, gpus=gpus, gpu_type="T4",
                      host=host, port=port, usage_period_s=2.0)
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's default for a local cluster, said explicitly
    err.print(f"starting fairgpu: local Ray with {gpus} logical T4 GPUs ...")
    try:
        server.start_background()
        err.print(f"fairgpu is up: API {server.url}")
        tokens = setup_accounts(server.engine, server.clock)
        jobs = {name: int(jobs_per_weight * w) for name, w in INSTITUTIONS}
        started = time.time()
        err.print(f"flooding the queue: {sum(jobs.values())} hold jobs of {seconds:g} s, 1 slice each")
        ids = set(flood(server.url, tokens, jobs, seconds))
        with Live(live_table(server, started), console=console, refresh_per_second=4,
                  transient=not console.is_terminal) as live:
            while True:
                with session_scope(server.engine) as s:
                    from sqlmodel import select

                    states = Counter(j.state for j in s.exec(select(Job).where(Job.id.in_(ids))).all())
                live.update(live_table(server, started))
                if states[JobState.SUCCEEDED] + states[JobState.FAILED] + states[JobState.CANCELLED] >= len(ids):
                    break
                time.sleep(0.25)
        intervals, delays = job_intervals(server.engine, ids)
        capacity = server.publisher.view().capacity_slices
        summary = summarise(intervals, dict(INSTITUTIONS), capacity, delays)
        table = Table(title="Who got what, while all three had jobs waiting", header_style="bold")
        for col in ("institution", "weight", "owed share", "got share", "deviation", "wait p50 s", "wait p95 s"):
            table.add_column(col, justify="right" if col != "institution" else "left")
        for name, w in INSTITUTIONS:
            table.add_row(name, f"{w:g}", f"{summary.entitled[name]:.1%}", f"{summary.share[name]:.1%}",
                          f"{(summary.share[name] - summary.entitled[name]) * 100:+.1f} pp",
                          *("-" if v is None else f"{v:.1f}"  # None: no job of it started
                            for v in (summary.wait_p50_s[name], summary.wait_p95_s[name])))
        lo, hi = summary.window
        table.caption = (f"contended window {hi - lo:.1f} s   Jain's index {summary.jain_index:.4f}   "
                         f"slice utilisation {summary.utilisation:.1%}   Ray start delay p50 "
                         f"{(summary.ray_start_delay_p50_s or 0) * 1000:.0f} ms, max "
                         f"{(summary.ray_start_delay_max_s or 0) * 1000:.0f} ms   "
                         f"failed jobs {states[JobState.FAILED]}")
        console.print(table)
        return summary
    finally:
        server.stop()
        if tmp is not None:
            tmp.cleanup()
