"""kill -9 of `fairgpu up` at any moment, then a new `fairgpu up`: every job either
finished exactly once or is queued again; none is lost, none runs to completion twice.
A job whose task ran at both crashes is not started a third time: it ends FAILED, saying
so (no crash loop).

Each crash waits for a state of the run, not for a time: the first when jobs have
finished, others run (their tasks started in Ray) and others wait; the second when the
restarted server runs jobs again. A restart after a crash waits for the dead server's
lease to lapse (`--lease-ttl 3`), and says so."""
from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import httpx
import pytest
from service_helpers import Up, admin_client, institution, wait_for
from sqlmodel import select

from scheduler.runtime.jobfiles import started_path
from scheduler.loop.recovery import crash_loop_message
from scheduler.store import Job, JobEvent, JobState, make_engine, session_scope

TTL = "3"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def started(tmp: Path, job: dict) -> bool:
    """The job's current attempt runs in Ray: its task created its start marker."""
    return job["state"] == "RUNNING" and started_path(tmp / "results", job["id"], job["attempts"]).exists()


def crash(up: Up) -> None:
    os.kill(up.pid, signal.SIGKILL)  # the server only: its Ray is orphaned, as in a real crash
    up.proc.wait(30)


@pytest.mark.slow
def test_kill_9_twice_loses_nothing_and_runs_nothing_twice(tmp_path):
    db = f"sqlite:///{tmp_path / 'fg.db'}"
    ups = [Up(db, tmp_path, "--lease-ttl", TTL)]
    try:
        base = ups[0].wait_up()
        assert mode(tmp_path / "admin.token") == 0o600
        admin = admin_client(base, tmp_path)
        user = institution(admin, "lab")
        ids = [user.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": seconds}).json()["id"]
               for seconds in [0.5] * 4 + [8.0] * 4 + [2.0] * 4]  # 1 GPU = 4 slices
        # the 8 s jobs run while the short ones have finished and the 2 s ones wait: the first
        # crash's moment, seconds long even on a busy machine; each crash reruns them whole

        def listing(url: str) -> list[dict]:
            return httpx.get(f"{url}/v1/jobs", params={"all": "true"}, headers=user.headers, timeout=30).json()

        def snapshot(url: str) -> list[tuple]:
            return [(j["id"], j["state"], j["attempts"]) for j in listing(url)]

        def mixed(url: str):
            js = listing(url)
            states = [j["state"] for j in js]
            running = [j for j in js if started(tmp_path, j)]
            return js if "SUCCEEDED" in states and running and "PENDING" in states else None

        wait_for(lambda: mixed(base), timeout=90, what="finished, running and waiting jobs",
                 show=lambda: (snapshot(base), sorted(p.name for p in (tmp_path / "results").glob("*"))))
        crash(ups[0])
        ups.append(Up(db, tmp_path, "--lease-ttl", TTL))
        ups[-1].wait_line(rf"pid {ups[0].pid} on this host\) is gone; taking over when its lease lapses")
        base = ups[-1].wait_up()
        ups[-1].wait_line(r"recovered: \d+ job\(s\) had finished, [1-9]\d* queued again", timeout=5)

        def rerun(url: str):  # the restarted server runs a requeued job again
            js = listing(url)
            return js if any(j["attempts"] >= 2 and started(tmp_path, j) for j in js) else None

        wait_for(lambda: rerun(base), timeout=90, what="a requeued job to run again",
                 show=lambda: (snapshot(base), sorted(p.name for p in (tmp_path / "results").glob("*"))))
        crash(ups[-1])
        ups.append(Up(db, tmp_path, "--lease-ttl", TTL))
        base = ups[-1].wait_up()

        def all_done():  # a job whose task ran at both crashes is not started a third time
            js = listing(base)
            return js if len(js) == len(ids) and all(j["state"] in ("SUCCEEDED", "FAILED") for j in js) else None

        final = wait_for(all_done, timeout=120, what="all jobs to end after the crashes",
                         show=lambda: snapshot(base))
        for j in final:
            if j["state"] == "FAILED":
                assert (j["attempts"], j["error"]) == (2, crash_loop_message(2)), j
        assert sorted(j["id"] for j in final) == sorted(ids)
        assert max(j["attempts"] for j in final) >= 2, "no job was requeued by either crash"
    finally:
        for up in ups:
            up.kill()
    engine = make_engine(db)
    with session_scope(engine) as s:
        finished = {}
        for ev in s.exec(select(JobEvent).where(JobEvent.kind == "finished")).all():
            finished[ev.job_id] = finished.get(ev.job_id, 0) + 1
        requeued = s.exec(select(JobEvent).where(JobEvent.kind == "requeued")).all()
        jobs = s.exec(select(Job)).all()
    engine.dispose()
    assert finished == {j.id: 1 for j in jobs if j.state == JobState.SUCCEEDED}
    assert requeued and all("restarted" in (e.message or "") for e in requeued)
    # each job completed exactly one attempt (the fenced ones never count), all of it
    for job in jobs:
        if job.state == JobState.FAILED:  # running at both crashes (tests/service/test_crash_loop.py)
            assert job.unclean_stops == 2 and job.result is None, job
            continue
        assert job.result["held_s"] == job.spec["seconds"], (job.id, job.result)
    # private: the state directory, the database and the job files are the owner's only
    results = tmp_path / "results"
    assert mode(tmp_path) == 0o700 and mode(results) == 0o700
    for path in [tmp_path / "fg.db", *tmp_path.glob("fg.db-*"), *results.rglob("*")]:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), (path, oct(mode(path)))
