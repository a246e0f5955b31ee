"""After a battery of hostile inputs, the service still schedules: every bad value is a 4xx
that writes nothing, the loop never fails, and a new job runs to completion. A real
embedded server (local Ray, SQLite, the HTTP API, the scheduling loop)."""
from __future__ import annotations

import httpx
import pytest

from service_helpers import account, start_server, submit, wait_for, wait_states


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("hostile"), gpus=1)
    yield s
    s.stop()


HOSTILE = [  # (method, path, raw JSON body): each must be refused with a 4xx
    ("POST", "/v1/admin/accounts", '{"name": "x", "weight": NaN}'),
    ("POST", "/v1/admin/accounts", '{"name": "x", "weight": Infinity}'),
    ("POST", "/v1/admin/accounts", '{"name": "x", "weight": 1e308}'),
    ("POST", "/v1/admin/accounts", '{"name": "x", "weight": 1e-12}'),
    ("POST", "/v1/admin/accounts", '{"name": "x", "weight": 1, "max_slices": 9223372036854775808}'),
    ("POST", "/v1/admin/accounts", '{"name": "x", "weight": 1, "max_pending": 2147483648}'),
    ("POST", "/v1/admin/accounts", '{"name": "x\\u0000y", "weight": 1}'),
    ("POST", "/v1/admin/accounts", '{"name": "..", "weight": 1}'),
    ("POST", "/v1/admin/accounts", '{"name": "a/b", "weight": 1}'),
    ("POST", "/v1/admin/accounts", '{"name": " padded ", "weight": 1}'),
    ("POST", "/v1/admin/accounts", '{"name": "tab\\tname", "weight": 1}'),
    ("PUT", "/v1/admin/capacity/huge", '{"gpus": 2147483648, "slices_per_gpu": 4}'),
    ("PUT", "/v1/admin/capacity/huge", '{"gpus": 64, "slices_per_gpu": 1000000}'),
    ("PUT", "/v1/admin/settings/half_life", '{"value": "7 fortnights"}'),
    ("PUT", "/v1/admin/settings/half_life", '{"value": "99999999999999999999d"}'),
    ("POST", "/v1/admin/tokens", '{"account": "lab", "expires": "10y"}'),
    ("POST", "/v1/admin/tokens", '{"account": "lab", "expires": "999999999999d"}'),
    ("DELETE", "/v1/admin/tokens/9223372036854775808", None),
    ("POST", "/v1/jobs", '{"account": "lab", "model": "hold", "slices": 1, "seconds": 1e300}'),
    ("POST", "/v1/jobs", '{"account": "lab", "model": "cyclegan", "framework": "pytorch", "slices": 1, '
                         '"image_size": 400000000}'),
    ("POST", "/v1/jobs", '{"account": "lab", "model": "hold", "slices": 1, "seconds": 1, "time_limit_s": NaN}'),
]


def test_hostile_inputs_are_refused_and_a_new_job_still_runs(server):
    lab = account(server, "lab")
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=30)
    before = admin.get("/v1/admin/accounts").json(), admin.get("/v1/admin/capacity").json()
    for method, path, body in HOSTILE:
        r = admin.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (method, path, body, r.status_code, r.text)
        assert len(r.json()["detail"].splitlines()) == 1
    assert (admin.get("/v1/admin/accounts").json(), admin.get("/v1/admin/capacity").json()) == before
    # extreme but valid: siblings 1000 and 0.001 (the widest ratio allowed) must not stop scheduling
    for name, weight in (("heavy", 1000), ("light", 0.001)):
        assert admin.post("/v1/admin/accounts", json={"name": name, "weight": weight}).status_code == 201
    light = account(server, "light/user", parent="light")
    [job_id] = submit(light, seconds=0.2)
    [other] = submit(lab, seconds=0.2)
    done = wait_states(lab, [other])
    assert done[other]["state"] == "SUCCEEDED"
    assert wait_states(light, [job_id])[job_id]["state"] == "SUCCEEDED"
    assert lab.get("/v1/share").status_code == 200 and admin.get("/v1/share").status_code == 200
    health = wait_for(lambda: (h := httpx.get(f"{server.url}/healthz").json()) and h.get("last_success_at") and h,
                      what="a healthy loop")
    assert health["status"] == "ok" and health["failures_total"] == 0
