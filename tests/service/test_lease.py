"""One scheduler per database, end to end with real `fairgpu up` processes (each with its
own local Ray), on SQLite and PostgreSQL:

- a second `fairgpu up` on the same database exits 1 within seconds naming the holder,
  and the first goes on serving; a `--standby` waits and takes over when the first
  stops (which drains, says so, and releases the lease);
- a leader paused (SIGSTOP) past its lease loses it to a standby, which recovers and
  goes on scheduling; resumed, the old leader writes nothing, says it lost the lease
  and exits 1.

Every wait is for something the servers say or the database shows, never a guessed time.
"""
from __future__ import annotations

import re
import signal
import time

import httpx
import pytest
import sqlalchemy as sa

from scheduler.runtime.jobfiles import started_path
from scheduler.store import make_engine
from service_helpers import Up, admin_client, institution, wait_for

pytestmark = pytest.mark.slow

TTL = 5.0  # seconds; the heartbeat renews every TTL / 3, so a busy machine does not lose it by accident


def job(client: httpx.Client, job_id: int) -> dict:
    r = client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def running_in_ray(client: httpx.Client, results, job_id: int):
    """The job is RUNNING and its task started in Ray (its start marker is there)."""
    j = job(client, job_id)
    return j if j["state"] == "RUNNING" and started_path(results, job_id, j["attempts"]).exists() else None


def test_a_second_server_is_refused_and_a_standby_takes_over_a_clean_stop(db_url, tmp_path):
    state = tmp_path / "state"
    a = Up(db_url, state, "--lease-ttl", str(TTL))
    ups = [a]
    try:
        url_a = a.wait_up()
        admin = admin_client(url_a, state)
        lab = institution(admin, "lab")
        [long_id] = [lab.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 600}).json()["id"]]
        wait_for(lambda: running_in_ray(lab, state / "results", long_id), what="the job to run on the first server")

        second = Up(db_url, state, "--lease-ttl", str(TTL))
        ups.append(second)
        t0 = time.monotonic()
        assert second.wait_exit(timeout=30) == 1
        assert time.monotonic() - t0 < 30
        assert len(second.lines) == 1 and re.fullmatch(
            rf"Error: the scheduler for this database is already running: \S+ pid {a.pid} since "
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(or start with --standby to wait for it\)", second.lines[0]), \
            second.output()
        assert httpx.get(f"{url_a}/healthz", timeout=10).status_code == 200  # the first goes on serving
        assert job(lab, long_id)["state"] == "RUNNING"

        b = Up(db_url, state, "--standby", "--lease-ttl", str(TTL))
        ups.append(b)
        b.wait_line(rf"^standing by: the scheduler for this database runs at \S+ pid {a.pid} since .*; "
                    r"taking over when its lease lapses$")
        a.signal(signal.SIGTERM)
        a.wait_line(r"^stopped; 1 running job\(s\) queued again$")
        assert a.wait_exit() == 0
        b.wait_line(r"^took over the scheduler lease \(epoch 2\)$", timeout=30)
        url_b = b.wait_up()
        lab_b = httpx.Client(base_url=url_b, headers=lab.headers, timeout=30)
        # the standby schedules: the drained job runs again, a new job runs to the end
        again = wait_for(lambda: running_in_ray(lab_b, state / "results", long_id), what="the drained job to run again")
        assert again["attempts"] == 2
        [short] = [lab_b.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 0.5}).json()["id"]]
        assert wait_for(lambda: job(lab_b, short)["state"] in ("SUCCEEDED", "FAILED") and job(lab_b, short),
                        what="the new job to end")["state"] == "SUCCEEDED"
        events = lab_b.get(f"/v1/jobs/{long_id}/logs").text
        assert "the scheduler shut down; queued again" in events
        assert lab_b.post(f"/v1/jobs/{long_id}/cancel").status_code == 200
    finally:
        for up in ups:
            up.kill()


def fingerprint(engine) -> dict:
    """What a scheduler writes: events, usage records, job versions and states, nodes, the
    lease's holder. (The lease's expiry moves with the new leader's heartbeat: left out.)"""
    with engine.connect() as conn:
        one = lambda q: conn.execute(sa.text(q)).one()  # noqa: E731
        return {
            "events": one("SELECT count(*), max(id) FROM job_event"),
            "usage": one("SELECT count(*), max(id) FROM usage_record"),
            "jobs": conn.execute(sa.text("SELECT id, version, state FROM job ORDER BY id")).all(),
            "nodes": conn.execute(sa.text("SELECT name, active, updated_at FROM node ORDER BY name")).all(),
            "lease": one("SELECT epoch, holder FROM leader_lease"),
        }


def cycles_since(url: str, last: str | None) -> str | None:
    """The end of the server's latest successful cycle, if it is not `last`."""
    seen = httpx.get(f"{url}/healthz", timeout=10).json().get("last_success_at")
    return seen if seen != last else None


def quiescent(engine, url: str) -> dict:
    """The database's fingerprint once a full cycle of the server at `url` changed nothing."""
    while True:
        before, mark = fingerprint(engine), cycles_since(url, None)
        for _ in range(2):  # the second new cycle began after `before` was read
            mark = wait_for(lambda: cycles_since(url, mark), timeout=30, what="a scheduling cycle")
        after = fingerprint(engine)
        if after == before:
            return after


def test_a_paused_leader_loses_to_a_standby_and_writes_nothing_when_resumed(db_url, tmp_path):
    state = tmp_path / "state"
    a = Up(db_url, state, "--lease-ttl", str(TTL))
    ups = [a]
    engine = make_engine(db_url)
    try:
        url_a = a.wait_up()
        admin = admin_client(url_a, state)
        lab = institution(admin, "lab")
        ids = [lab.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 600}).json()["id"]
               for _ in range(2)]
        for i in ids:
            wait_for(lambda: running_in_ray(lab, state / "results", i), what=f"job {i} to run on the leader")
        b = Up(db_url, state, "--standby", "--lease-ttl", str(TTL))
        ups.append(b)
        b.wait_line(rf"^standing by: .* pid {a.pid} since ")

        a.stop_until_taken_over(b, TTL)
        url_b = b.wait_up()
        lab_b = httpx.Client(base_url=url_b, headers=lab.headers, timeout=30)
        # the standby recovered the paused leader's jobs and fenced their attempts; each stops
        # itself (it sees the fence), and only then does the new leader run the job again
        for i in ids:
            wait_for(lambda: (j := running_in_ray(lab_b, state / "results", i)) and j["attempts"] == 2,
                     what=f"job {i} to run again on the new leader")
        [fresh] = [lab_b.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 0.5}).json()["id"]]
        assert wait_for(lambda: job(lab_b, fresh)["state"] in ("SUCCEEDED", "FAILED") and job(lab_b, fresh),
                        what="the new job to end")["state"] == "SUCCEEDED"
        for i in ids:
            assert lab_b.post(f"/v1/jobs/{i}/cancel").status_code == 200
        wait_for(lambda: all(job(lab_b, i)["state"] == "CANCELLED" for i in ids), what="the jobs to be cancelled")

        before = quiescent(engine, url_b)  # nothing runs or waits: the new leader has nothing to write
        a.signal(signal.SIGCONT)
        a.wait_line(r"lost the scheduler lease \(epoch 1\); it is now held by \S+ pid "
                    rf"{b.pid} since .*; this server stopped scheduling and cancelled its Ray tasks$", timeout=30)
        assert a.wait_exit(timeout=60) == 1
        assert sum(line.startswith("this server lost the scheduler lease") for line in a.lines) == 1, a.output()
        assert not any("stopped;" in line for line in a.lines), a.output()  # no drain
        after = fingerprint(engine)
        assert after == before
        assert httpx.get(f"{url_b}/healthz", timeout=10).status_code == 200  # the new leader serves on
    finally:
        for up in ups:
            up.kill()
        engine.dispose()
