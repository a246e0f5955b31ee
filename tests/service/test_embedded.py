"""The embedded server end to end: a real local Ray with logical GPUs, real SQLite, the
real HTTP API. One server for the module; each test uses its own institutions and
waits for its jobs to end, so tests do not overlap."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from scheduler.cli import main
from scheduler.contention import summarise
from scheduler.demo import job_intervals
from scheduler.store import session_scope
from service_helpers import account, jobs, listening_sockets, start_server, submit, wait_for, wait_states


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("embedded"), gpus=2)  # 2 logical T4 = 8 slices
    yield s
    s.stop()


def test_capacity_comes_from_ray(server):
    view = wait_for(lambda: server.publisher.view(), what="a first cycle")
    assert view.capacity_slices == 8


def test_the_api_got_a_real_port_and_the_local_ray_listens_on_loopback_only(server):
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
    node = server.ray.nodes()[0]
    assert node["NodeManagerAddress"] == "127.0.0.1"
    sockets = listening_sockets(os.getpid())  # this process (API, Ray's driver) and every Ray process below it
    names = {name for _, name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets
    assert (os.getpid(), "127.0.0.1", server.port) in {(pid, addr, port) for pid, _, addr, port in sockets}
    assert all(addr in ("127.0.0.1", "::1") for _, _, addr, _ in sockets), sockets


def test_submit_run_finish_through_the_cli(server):
    client = account(server, "cli-inst")
    env = {"FAIRGPU_URL": server.url, "FAIRGPU_TOKEN": client.headers["Authorization"].split()[1]}
    runner = CliRunner()
    r = runner.invoke(main, ["submit", "hold", "--seconds", "0.5", "--slices", "2", "--json"], env=env)
    assert r.exit_code == 0, r.output
    job_id = json.loads(r.stdout)["id"]
    wait_states(client, [job_id])
    r = runner.invoke(main, ["jobs", "--all", "--json"], env=env)
    listed = {j["id"]: j for j in json.loads(r.stdout)}
    assert listed[job_id]["state"] == "SUCCEEDED" and listed[job_id]["node"]
    r = runner.invoke(main, ["job", "show", str(job_id), "--json"], env=env)
    shown = json.loads(r.stdout)
    assert shown["result"]["held_s"] == 0.5
    assert shown["result"]["ray_start_delay_s"] < 5.0
    r = runner.invoke(main, ["logs", str(job_id)], env=env)
    assert r.exit_code == 0
    for kind in ("submitted", "admitted", "started", "finished"):
        assert kind in r.output


def test_a_real_pytorch_workload_runs_as_a_job(server):
    client = account(server, "torch-inst")
    [job_id] = submit(client, model="conv6", framework="pytorch", mode="train", slices=1, steps=4,
                      batch_size=4)
    done = wait_states(client, [job_id], timeout=180)[job_id]
    assert done["state"] == "SUCCEEDED", done
    result = done["result"]
    assert result["model"] == "conv6" and result["framework"] == "pytorch"
    assert result["samples_per_second"] > 0 and result["memory_fraction"] == pytest.approx(0.25)


def test_weighted_shares_under_contention(server):
    weights = {"fair-a": 1, "fair-b": 2, "fair-c": 3}
    clients = {name: account(server, name, weight=w) for name, w in weights.items()}
    ids: dict[str, list[int]] = {name: [] for name in weights}
    for _ in range(16):  # interleaved arrivals, more than the 8 slices can run at once
        for name, w in weights.items():
            ids[name] += submit(clients[name], n=w, seconds=1.0)
    for name, c in clients.items():
        wait_states(c, ids[name], timeout=240)
    intervals, delays = job_intervals(server.engine, {i for v in ids.values() for i in v})
    summary = summarise(intervals, weights, 8, delays)
    for name in weights:
        assert abs(summary.share[name] - summary.entitled[name]) < 0.05, summary
    assert summary.jain_index >= 0.98, summary
    assert summary.utilisation >= 0.85, summary
    assert summary.ray_start_delay_p50_s < 0.5, summary


def test_reclaim_preempts_the_borrower_and_requeues_it(server):
    borrower = account(server, "borrower", weight=1)
    owner = account(server, "owner", weight=1, guaranteed=4)
    hogs = submit(borrower, n=8, seconds=60)
    wait_for(lambda: sum(j["state"] == "RUNNING" for j in jobs(borrower).values()) == 8, what="8 hogs running")
    mine = submit(owner, n=4, seconds=60)
    wait_for(lambda: all(j["state"] == "RUNNING" for i, j in jobs(owner).items() if i in mine),
             what="the owner's guarantee")
    theirs = jobs(borrower)
    requeued = [j for j in theirs.values() if j["state"] == "PENDING"]
    assert len(requeued) == 4 and all(j["preemptions"] == 1 for j in requeued)
    log = borrower.get(f"/v1/jobs/{requeued[0]['id']}/logs").json()
    assert "below its guarantee" in json.dumps(log)
    # never lost: cancel everything and check all 12 end CANCELLED
    for i in hogs:
        assert borrower.post(f"/v1/jobs/{i}/cancel").status_code == 200
    for i in mine:
        assert owner.post(f"/v1/jobs/{i}/cancel").status_code == 200
    assert all(j["state"] == "CANCELLED" for j in wait_states(borrower, hogs).values() if j["id"] in hogs)
    wait_for(lambda: not server.executor.attempts, what="Ray tasks to stop", timeout=30)


def test_an_institution_cannot_see_anothers_jobs(server):
    a = account(server, "iso-a")
    b = account(server, "iso-b")
    [job_id] = submit(a, seconds=0.1)
    assert b.get(f"/v1/jobs/{job_id}").status_code == 404
    assert b.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert job_id not in jobs(b)
    wait_states(a, [job_id])


def test_usage_is_charged_in_slice_seconds(server):
    c = account(server, "meter")
    ids = submit(c, n=2, slices=2, seconds=1.0)
    wait_states(c, ids)
    from scheduler.services.share import share_rows

    def charged():
        with session_scope(server.engine) as s:
            row = next(r for r in share_rows(s, server.clock()) if r["account"] == "meter")
        return row["raw_usage"] if row["raw_usage"] > 0 else None

    used = wait_for(charged, what="usage records")
    # charged from the task's own start (not from admission: Ray's cold start is not the
    # institution's) to its end; a charge while it ran starts at its start marker, created
    # a moment before the task reads its clock
    held = 0.0
    for job in jobs(c).values():
        held += job["slices"] * (job["result"]["task_finished_at"] - job["result"]["task_started_at"])
    assert used == pytest.approx(held, abs=0.05)
    assert used >= 2 * 2 * 1.0  # 2 jobs x 2 slices x at least the 1 s they held


def test_a_job_past_its_time_ends_timeout_and_is_published_without_a_failed_cycle(server):
    """`submit hold --seconds 60 --time 5s` as a new user would: TIMEOUT, no cycle fails
    (the exporter once lacked `timeout`), and /metrics counts it."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    client = account(server, "timed-inst")
    env = {"FAIRGPU_URL": server.url, "FAIRGPU_TOKEN": client.headers["Authorization"].split()[1]}
    r = CliRunner().invoke(main, ["submit", "hold", "--seconds", "60", "--time", "5s", "--slices", "1", "--json"],
                           env=env)
    assert r.exit_code == 0, r.output
    job_id = json.loads(r.stdout)["id"]
    done = wait_states(client, [job_id], timeout=60)[job_id]
    assert (done["state"], done["reason"]) == ("TIMEOUT", "TimeLimit")
    admin = {"Authorization": f"Bearer {server.admin_token}"}

    def scraped():
        text = httpx.get(f"{server.url}/metrics", headers=admin, timeout=30).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    timeout_key = ("fairgpu_account_finished_jobs_total", (("account", "timed-inst"), ("status", "timeout")))
    series = wait_for(lambda: (lambda m: m if m.get(timeout_key) else None)(scraped()), timeout=10,
                      what="the time-out on /metrics")
    assert series[timeout_key] == 1
    assert series[("fairgpu_schedule_cycle_failures_total", ())] == 0
    assert series[("fairgpu_schedule_cycle_publish_failures_total", ())] == 0
    assert server.loop.health().failures_total == 0


def test_stop_requeues_running_jobs(tmp_path):
    s = start_server(tmp_path, gpus=1, warm_up=False)
    client = account(s, "drained")
    ids = submit(client, n=3, seconds=60)
    wait_for(lambda: sum(j["state"] == "RUNNING" for j in jobs(client).values()) == 3, what="3 running")
    assert s.stop() == 3
    from sqlmodel import select

    from scheduler.store import Job, make_engine

    engine = make_engine(s.db_url)
    with session_scope(engine) as session:
        states = {j.id: j.state.value for j in session.exec(select(Job)).all()}
    assert states == {i: "PENDING" for i in ids}
