"""Failover under load, end to end with real `fairgpu up` processes, on SQLite and
PostgreSQL: a leader and a hot `--standby` (each with its own local Ray).

- The standby serves its API, read-only, before it leads: reads answer, writes are 503
  naming the leader, every answer says its role (`X-Fairgpu-Role`).
- The leader is paused (SIGSTOP) with every slice busy and jobs waiting. The standby takes
  the lease once it lapses and admits its first job within TTL + 5 s of the stop.
- The paused leader's attempts stop themselves (they find their fence) and hold their
  slices until they did; resumed, the old leader writes nothing and exits 1.
- Every job SUCCEEDS once, and each account's charged usage is within 2 % of the
  slice-seconds its attempts held (start to end, as each attempt's own end marker says).

The figures (stop -> lease taken, stop -> first admission) are printed; docs/deploy.md
quotes them."""
from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from scheduler.runtime import jobfiles
from scheduler.store import make_engine
from scheduler.store.lease import current_holder
from service_helpers import Up, admin_client, institution, wait_for, wait_states

pytestmark = pytest.mark.slow

TTL = 5.0
SECONDS = 10.0  # each hold job's length
PER_ACCOUNT = 3  # 6 jobs of 1 slice on 4 slices: 4 run, 2 wait


def held_slice_seconds(results, job_ids: list[int]) -> float:
    """What the jobs' attempts held: each attempt from its start to its end, by its end marker."""
    total = 0.0
    for job_id in job_ids:
        for marker in jobfiles.job_dir(results, job_id).glob("attempt-*.ended"):
            attempt = int(marker.name.split("-")[1].split(".")[0])
            ended = jobfiles.read_ended(results, job_id, attempt)
            assert ended and ended.get("started_at") is not None, (job_id, attempt, ended)
            total += ended["ended_at"] - ended["started_at"]  # 1 slice each
    return total


def charged(engine, job_ids: list[int]) -> float:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.coalesce(sa.func.sum(sa.column("slice_seconds")), 0.0))
                            .select_from(sa.table("usage_record", sa.column("slice_seconds"), sa.column("job_id")))
                            .where(sa.column("job_id").in_(job_ids))).scalar()


def holder(engine):
    try:
        return current_holder(engine)
    except sa.exc.DBAPIError:  # not migrated yet
        return None


def first_admission_after(engine, t: float) -> float | None:
    with engine.connect() as conn:
        at = conn.execute(sa.text("SELECT min(at) FROM job_event WHERE kind = 'admitted' AND at > :t"),
                          {"t": datetime.fromtimestamp(t, tz=UTC)}).scalar()
    if at is None:
        return None
    at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def test_a_hot_standby_takes_over_a_paused_leader_and_every_slice_second_is_charged_once(db_url, tmp_path):
    state = tmp_path / "state"
    results = state / "results"
    engine = make_engine(db_url)
    a = Up(db_url, state, "--lease-ttl", str(TTL))
    ups = [a]
    try:
        wait_for(lambda: holder(engine), what="the leader to take the lease")  # it does so before its Ray starts
        b = Up(db_url, state, "--standby", "--lease-ttl", str(TTL))  # both Rays start side by side
        ups.append(b)
        url_a = a.wait_up()
        b.wait_line(rf"^standing by: .* pid {a.pid} since ")
        url_b = b.wait_up()  # hot: its API serves while it waits
        admin = admin_client(url_a, state)
        clients = {name: institution(admin, name) for name in ("north", "south")}

        ids: dict[str, list[int]] = {}
        for name, client in clients.items():
            ids[name] = [client.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": SECONDS}).json()["id"]
                         for _ in range(PER_ACCOUNT)]
        every = [j for js in ids.values() for j in js]
        wait_for(lambda: sum(jobfiles.started_path(results, j, 1).exists() for j in every) == 4,
                 what="4 jobs to run on the leader")

        on_b = httpx.Client(base_url=url_b, headers=clients["north"].headers, timeout=30)
        r = on_b.get("/v1/jobs", params={"all": "true"})
        assert r.status_code == 200 and r.headers["x-fairgpu-role"] == "standby"
        assert {j["id"] for j in r.json()} == set(ids["north"])
        r = on_b.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 1})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["detail"].startswith("this server is a standby: the scheduler for this database runs at ")
        assert f"pid {a.pid} since" in r.json()["detail"]

        stopped = a.stop_until_taken_over(b, TTL)
        took = time.time() - stopped
        b.wait_line(r"^recovered: \d+ job\(s\) had finished, \d+ queued again; [1-4] fenced attempt\(s\) still "
                    r"hold their slices until they stop$", timeout=30)
        first = wait_for(lambda: first_admission_after(engine, stopped), timeout=60,
                         what="the standby's first admission") - stopped
        print(f"\n[{engine.dialect.name}] ttl {TTL:g} s: lease taken {took:.1f} s after the stop, "
              f"first admission {first:.1f} s after it")
        assert first <= TTL + 5

        done = wait_states(on_b, ids["north"], timeout=120) | wait_states(
            httpx.Client(base_url=url_b, headers=clients["south"].headers, timeout=30), ids["south"], timeout=120)
        assert {j["state"] for j in done.values()} == {"SUCCEEDED"}
        assert max(j["attempts"] for j in done.values()) == 2  # the paused leader's 4 ran twice

        a.signal(signal.SIGCONT)
        a.wait_line(r"lost the scheduler lease \(epoch 1\)", timeout=30)
        assert a.wait_exit(timeout=60) == 1
        assert not any("stopped;" in line for line in a.lines), a.output()  # no drain

        for name, job_ids in ids.items():
            held, paid = held_slice_seconds(results, job_ids), charged(engine, job_ids)
            print(f"[{engine.dialect.name}] {name}: held {held:.1f} slice-s, charged {paid:.1f}")
            assert held >= PER_ACCOUNT * SECONDS
            assert paid == pytest.approx(held, rel=0.02), (name, held, paid)
    finally:
        for up in ups:
            up.kill()
        engine.dispose()
