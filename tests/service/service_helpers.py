"""Helpers for service tests: a real embedded server (SQLite, local Ray with logical
GPUs), accounts and tokens through the services, and waiting on job states."""
from __future__ import annotations

import time
from pathlib import Path

import httpx

from scheduler.demo import free_port
from scheduler.server import Embedded
from scheduler.services.accounts import add_account
from scheduler.services.auth import issue_token
from scheduler.store import session_scope

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def start_server(tmp: Path, **kw) -> Embedded:
    kw.setdefault("gpus", 2)
    server = Embedded(db_url=f"sqlite:///{tmp / 'fairgpu.db'}", state_dir=tmp, port=free_port(),
                      usage_period_s=1.0, period_s=0.5, **kw)
    return server.start_background()


def account(server: Embedded, name: str, weight: float = 1.0, **kw) -> httpx.Client:
    """Create an institution and return an API client holding its token."""
    with session_scope(server.engine) as s:
        add_account(s, name, weight=weight, **kw)
    with session_scope(server.engine) as s:
        token = issue_token(s, account=name, name="test", expires_s=None, at=server.clock())
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def submit(client: httpx.Client, n: int = 1, **body) -> list[int]:
    body.setdefault("model", "hold")
    body.setdefault("slices", 1)
    ids = []
    for _ in range(n):
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def jobs(client: httpx.Client) -> dict[int, dict]:
    r = client.get("/v1/jobs", params={"all": "true"})
    assert r.status_code == 200, r.text
    return {j["id"]: j for j in r.json()}


def wait_for(predicate, timeout: float = 90.0, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_states(client: httpx.Client, ids, states=FINAL, timeout: float = 120.0) -> dict[int, dict]:
    ids = set(ids)

    def done():
        js = jobs(client)
        return js if all(js[i]["state"] in states for i in ids) else None

    return wait_for(done, timeout, what=f"jobs {sorted(ids)[:5]}... to reach {sorted(states)}")
