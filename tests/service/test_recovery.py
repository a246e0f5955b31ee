"""kill -9 of `fairgpu up` at any moment, then a new `fairgpu up`: every job either
finished exactly once or is queued again; none is lost, none runs to completion twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from scheduler.demo import free_port
from scheduler.store import Job, JobEvent, make_engine, session_scope
from service_helpers import wait_for

FAIRGPU = [sys.executable, "-m", "scheduler.cli"]


def start(tmp: Path, port: int) -> subprocess.Popen:
    log = open(tmp / "server.log", "a")
    proc = subprocess.Popen(
        [*FAIRGPU, "up", "--db", f"sqlite:///{tmp / 'fg.db'}", "--gpus", "1", "--port", str(port),
         "--state-dir", str(tmp)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )

    def healthy():
        if proc.poll() is not None:
            raise AssertionError(f"fairgpu up exited: {(tmp / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=90, what="fairgpu up to answer")
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.mark.slow
def test_kill_9_twice_loses_nothing_and_runs_nothing_twice(tmp_path):
    port = free_port()
    procs = [start(tmp_path, port)]
    try:
        admin = {"Authorization": f"Bearer {(tmp_path / 'admin.token').read_text().strip()}"}
        assert oct((tmp_path / "admin.token").stat().st_mode & 0o777) == "0o600"
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(f"{base}/v1/admin/accounts", json={"name": "lab", "weight": 1}, headers=admin)
        assert r.status_code in (200, 201), r.text
        token = httpx.post(f"{base}/v1/admin/tokens", json={"account": "lab"}, headers=admin).json()["token"]
        user = {"Authorization": f"Bearer {token}"}
        ids = [httpx.post(f"{base}/v1/jobs", json={"model": "hold", "slices": 1, "seconds": seconds},
                          headers=user).json()["id"] for seconds in [0.5] * 4 + [15.0] * 4 + [2.0] * 4]
        for pause in (2.5, 3.0):  # two crashes, with jobs finished, running and waiting each time
            time.sleep(pause)
            os.kill(procs[-1].pid, signal.SIGKILL)  # the server only; its Ray is orphaned like in a crash
            procs[-1].wait(timeout=30)
            procs.append(start(tmp_path, port))

        def all_done():
            js = httpx.get(f"{base}/v1/jobs", params={"all": "true"}, headers=user).json()
            return js if all(j["state"] == "SUCCEEDED" for j in js) and len(js) == len(ids) else None

        final = wait_for(all_done, timeout=120, what="all jobs to succeed after the crashes")
        assert sorted(j["id"] for j in final) == sorted(ids)
        assert max(j["attempts"] for j in final) >= 2, "no job was requeued by either crash"
    finally:
        for p in procs:
            kill_group(p)
    engine = make_engine(f"sqlite:///{tmp_path / 'fg.db'}")
    with session_scope(engine) as s:
        finished = {}
        for ev in s.exec(select(JobEvent).where(JobEvent.kind == "finished")).all():
            finished[ev.job_id] = finished.get(ev.job_id, 0) + 1
        requeued = s.exec(select(JobEvent).where(JobEvent.kind == "requeued")).all()
        jobs = s.exec(select(Job)).all()
    assert finished == {i: 1 for i in ids}
    assert requeued and all("restarted" in (e.message or "") for e in requeued)
    # each job completed exactly one attempt; every other attempt was fenced
    completed = [p.name for p in (tmp_path / "results").glob("*.json") if "fenced" not in p.read_text()]
    assert sorted(int(f.split("-")[0]) for f in completed) == sorted(ids), completed
    for job in jobs:
        result = json.loads((tmp_path / "results" / f"{job.id}-{job.attempts}.json").read_text())
        assert result["held_s"] == job.spec["seconds"]
