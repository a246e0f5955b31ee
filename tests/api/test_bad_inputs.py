"""Bad requests get a 4xx with a one-line message, and nothing is written."""
from __future__ import annotations

import json

from quota import limits
from scheduler.api import MAX_BODY_BYTES

from api_helpers import bearer

OK = {"model": "hold", "seconds": 5, "slices": 1, "account": "uni-a/nlp"}
JSON = {"content-type": "application/json"}

# (what, body (dict, or raw bytes), status, a phrase the detail must contain)
SUBMISSIONS = [
    ("unknown model", {**OK, "model": "alexnet"}, 422, "unknown model 'alexnet'"),
    ("zero slices", {**OK, "slices": 0}, 422, f"slices must be {limits.JOB_SLICES.describe()} (got 0)"),
    ("negative slices", {**OK, "slices": -1}, 422, f"slices must be {limits.JOB_SLICES.describe()} (got -1)"),
    ("more than any node", {**OK, "slices": 9}, 422, "more than any node holds (largest: 8)"),
    ("slices as text", {**OK, "slices": "2"}, 422, "slices: Input should be a valid integer"),
    ("missing slices", {"model": "hold", "seconds": 5, "account": "uni-a/nlp"}, 422, "slices is required"),
    ("unknown field", {**OK, "priority": 99}, 422, "unknown field priority"),
    ("model without framework", {"model": "resnet18", "slices": 1, "account": "uni-a/nlp"}, 422, "needs a framework"),
    ("hold without seconds", {"model": "hold", "slices": 1, "account": "uni-a/nlp"}, 422, "needs seconds"),
    ("bad mode", {**OK, "mode": "serve"}, 422, "mode must be train or infer"),
    ("someone else's account", {**OK, "account": "uni-b"}, 404, "unknown account uni-b"),
    ("an inner account", {**OK, "account": "uni-a"}, 422, "leaf accounts"),
    ("an inner account by default", {"model": "hold", "seconds": 5, "slices": 1}, 422, "leaf accounts"),
    ("malformed JSON", b'{"model": "hold", "slices": ', 400, "malformed JSON"),
    ("not an object", b'[1, 2]', 422, "valid dictionary"),
]


def test_bad_submissions(seeded, client):
    h = {**bearer(seeded.tokens["a"]), **JSON}
    before = seeded.counts()
    for what, body, status, phrase in SUBMISSIONS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = client.post("/v1/jobs", content=content, headers=h)
        assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
        detail = r.json()["detail"]
        assert set(r.json()) == {"detail"} and phrase in detail and "\n" not in detail, f"{what}: {detail}"
        assert seeded.counts() == before, f"{what} wrote something"
    assert client.changes == []


def test_pending_limit(seeded, client):
    h, mine = bearer(seeded.tokens["a_vision"]), {"model": "hold", "seconds": 5, "slices": 1}
    for _ in range(3):
        assert client.post("/v1/jobs", json=mine, headers=h).status_code == 201
    assert len(client.changes) == 3
    before = seeded.counts()
    r = client.post("/v1/jobs", json=mine, headers=h)
    assert r.status_code == 409 and "limit of 3 pending jobs" in r.json()["detail"]
    assert seeded.counts() == before and len(client.changes) == 3


def test_too_large_bodies_declared_or_streamed(seeded, client):
    h = {**bearer(seeded.tokens["a"]), **JSON}
    big = json.dumps({**OK, "account": "x" * MAX_BODY_BYTES}).encode()
    before = seeded.counts()
    declared = client.post("/v1/jobs", content=big, headers=h)

    def chunks():
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    streamed = client.post("/v1/jobs", content=chunks(), headers=h)  # chunked: no Content-Length
    for r in (declared, streamed):
        assert r.status_code == 413 and r.json() == {"detail": "request body too large (limit 64 KiB)"}
    assert seeded.counts() == before


def test_admin_refusals_are_409_or_422_and_write_nothing(seeded, client):
    h = bearer(seeded.tokens["admin"])
    before = seeded.counts()
    cases = [
        ("POST", "/v1/admin/accounts", {"name": "x", "weight": 0}, 422, f"weight must be {limits.WEIGHT.describe()}"),
        ("POST", "/v1/admin/accounts", {"name": "uni-b", "weight": 1}, 409, "already exists"),
        ("POST", "/v1/admin/accounts", {"name": "x", "weight": 1, "parent": "nope"}, 404, "unknown account nope"),
        ("POST", "/v1/admin/accounts", {"name": "x", "weight": 1, "guaranteed": 99}, 409, "over the capacity"),
        ("PATCH", "/v1/admin/accounts/uni-b", {"weight": None}, 422, "cannot be null"),
        ("DELETE", "/v1/admin/accounts/uni-a", None, 409, "has sub-accounts"),
        ("PUT", "/v1/admin/capacity/n1", {"gpus": -1}, 422, f"gpus must be {limits.GPUS_PER_NODE.describe()}"),
        ("POST", "/v1/admin/tokens", {"account": "nope"}, 404, "unknown account nope"),
        ("POST", "/v1/admin/tokens", {"account": "uni-b", "expires": "soon"}, 422, "expires must be a duration"),
        ("DELETE", "/v1/admin/tokens/999", None, 404, "no token with id 999"),
        ("PUT", "/v1/admin/settings/algorithm", {"value": "lottery"}, 422, "algorithm must be one of"),
        ("PUT", "/v1/admin/settings/colour", {"value": "blue"}, 404, "unknown setting"),
        ("GET", "/v1/admin/settings/colour", None, 404, "unknown setting"),
        ("GET", "/v1/nowhere", None, 404, "Not Found"),
        ("GET", f"/v1/jobs/{2**70}", None, 422, f"job_id must be {limits.ID.describe()}"),
        ("POST", f"/v1/jobs/{2**31}/cancel", None, 422, f"job_id must be {limits.ID.describe()}"),
        ("POST", "/v1/jobs/abc/cancel", None, 422, "job_id: Input should be a valid integer"),
    ]
    for method, path, body, status, phrase in cases:
        r = client.request(method, path, json=body, headers=h)
        assert (r.status_code, set(r.json())) == (status, {"detail"}), f"{method} {path}: {r.text}"
        assert phrase in r.json()["detail"], f"{method} {path}: {r.text}"
        assert seeded.counts() == before, f"{method} {path} wrote something"
