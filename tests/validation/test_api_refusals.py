"""Hostile values sent to the API, on SQLite and PostgreSQL: a 4xx whose one-line detail
names the field and what is allowed, the same on both databases, and nothing written.

One table per defect class of issue 10 ("What broke", items 1 to 4).
"""
from __future__ import annotations

import json

import pytest

from api_helpers import bearer
from quota import limits
from scheduler.services.validate import describe_duration
from validation_helpers import dump, one_line

W = f"weight must be {limits.WEIGHT.describe()}"
ACCOUNTS = "/v1/admin/accounts"

# (method, path, body: dict, raw JSON bytes or None, status, phrases the detail must contain)
WEIGHTS = {
    "NaN": ("POST", ACCOUNTS, b'{"name": "x", "weight": NaN}', 422, [W, "(got nan)"]),
    "Infinity": ("POST", ACCOUNTS, b'{"name": "x", "weight": Infinity}', 422, [W, "(got inf)"]),
    "-Infinity": ("PATCH", f"{ACCOUNTS}/uni-b", b'{"weight": -Infinity}', 422, [W]),
    "huge": ("POST", ACCOUNTS, {"name": "x", "weight": 1e300}, 422, [W]),
    "tiny": ("PATCH", f"{ACCOUNTS}/uni-b", {"weight": 1e-300}, 422, [W]),
    "past the ratio": ("PATCH", f"{ACCOUNTS}/uni-a/nlp", {"weight": limits.WEIGHT.high * 10}, 422, [W]),
    "zero": ("POST", ACCOUNTS, {"name": "x", "weight": 0}, 422, [W]),
}

COLUMNS = {
    "max_slices 2^31": ("POST", ACCOUNTS, {"name": "x", "weight": 1, "max_slices": 2**31}, 422,
                        [f"max must be {limits.MAX_SLICES.describe()}", "2147483648"]),
    "max_slices 2^63": ("PATCH", f"{ACCOUNTS}/uni-b", {"max_slices": 2**63}, 422,
                        [f"max must be {limits.MAX_SLICES.describe()}"]),
    "max_pending 2^31": ("PATCH", f"{ACCOUNTS}/uni-b", {"max_pending": 2**31}, 422,
                         [f"max_pending must be {limits.MAX_PENDING.describe()}"]),
    "max_pending -2^63": ("POST", ACCOUNTS, {"name": "x", "weight": 1, "max_pending": -2**63}, 422,
                          [f"max_pending must be {limits.MAX_PENDING.describe()}"]),
    "guaranteed 2^64": ("POST", ACCOUNTS, {"name": "x", "weight": 1, "guaranteed": 2**64}, 422,
                        [f"guaranteed must be {limits.GUARANTEED.describe()}"]),
    "gpus 2^31": ("PUT", "/v1/admin/capacity/n1", {"gpus": 2**31}, 422,
                  [f"gpus must be {limits.GPUS_PER_NODE.describe()}"]),
    "gpus 2^63 on a new node": ("PUT", "/v1/admin/capacity/n2", {"gpus": 2**63}, 422, ["gpus must be"]),
    "slices_per_gpu 2^63": ("PUT", "/v1/admin/capacity/n2", {"gpus": 1, "slices_per_gpu": 2**63}, 422,
                            [f"slices_per_gpu must be {limits.SLICES_PER_GPU.describe()}"]),
    "token id 2^31": ("DELETE", f"/v1/admin/tokens/{2**31}", None, 422,
                      [f"token id must be {limits.ID.describe()}"]),
    "token id 2^63": ("DELETE", f"/v1/admin/tokens/{2**63}", None, 422, ["token id must be"]),
    "job id 2^31": ("GET", f"/v1/jobs/{2**31}", None, 422, [f"job_id must be {limits.ID.describe()}"]),
    "job id 2^64": ("POST", f"/v1/jobs/{2**64}/cancel", None, 422, ["job_id must be"]),
    "lifetime unit": ("POST", "/v1/admin/tokens", {"account": "uni-b", "expires": "3fortnights"}, 422,
                      ["expires must be a duration"]),
    "lifetime overflow": ("POST", "/v1/admin/tokens", {"account": "uni-b", "expires": "99999999999999999999d"},
                          422, [f"expires must be {describe_duration(limits.TOKEN_LIFETIME)}"]),
    "half-life overflow": ("PUT", "/v1/admin/settings/half_life", {"value": "1" * 30 + "w"}, 422,
                           [f"half_life must be {describe_duration(limits.HALF_LIFE)}"]),
}

NULS = {
    "name": ("POST", ACCOUNTS, {"name": "x\x00y", "weight": 1}, 422, ["name must not contain control"]),
    "parent": ("POST", ACCOUNTS, {"name": "x", "weight": 1, "parent": "uni-a\x00"}, 422, ["parent"]),
    "account in the path": ("PATCH", f"{ACCOUNTS}/uni-b%00", {"weight": 1}, 422, ["account"]),
    "new parent": ("PATCH", f"{ACCOUNTS}/uni-b", {"parent": "uni-a\x00"}, 422, ["parent"]),
    "removed account": ("DELETE", f"{ACCOUNTS}/uni-b%00x", None, 422, ["account"]),
    "node": ("PUT", "/v1/admin/capacity/n%00", {"gpus": 1}, 422, ["node must not contain control"]),
    "gpu type": ("PUT", "/v1/admin/capacity/n2", {"gpus": 1, "gpu_type": "T\x004"}, 422, ["gpu_type"]),
    "token name": ("POST", "/v1/admin/tokens", {"account": "uni-b", "name": "t\x00"}, 422, ["token name"]),
    "token to revoke": ("DELETE", "/v1/admin/tokens/fg_%00abc", None, 422, ["token"]),
    "setting value": ("PUT", "/v1/admin/settings/half_life", {"value": "7d\x00"}, 422, ["half_life"]),
    "setting key": ("PUT", "/v1/admin/settings/half%00life", {"value": "7d"}, 404, ["unknown setting"]),
    "jobs of an account": ("GET", "/v1/jobs?account=uni-a%00", None, 422, ["account"]),
}

NAMES = {
    "dot-dot": ("POST", ACCOUNTS, {"name": "..", "weight": 1}, 422, ["'..'"]),
    "path-like": ("POST", ACCOUNTS, {"name": "uni-a/../uni-b", "weight": 1, "parent": "uni-a"}, 422, ["'..'"]),
    "escape": ("POST", ACCOUNTS, {"name": "x\x1b[31m", "weight": 1}, 422, ["control characters"]),
    "tab": ("POST", ACCOUNTS, {"name": "x\ty", "weight": 1}, 422, ["control characters"]),
    "newline": ("POST", ACCOUNTS, {"name": "x\ny", "weight": 1}, 422, ["control characters"]),
    "top-level slash": ("POST", ACCOUNTS, {"name": "uni-c/lab", "weight": 1}, 422,
                        ["a top-level account's name has no '/'"]),
    "leading slash": ("POST", ACCOUNTS, {"name": "/uni-c", "weight": 1}, 422, ["each '/'-separated part"]),
    "leading space": ("POST", ACCOUNTS, {"name": " uni-c", "weight": 1}, 422, ["surrounding whitespace"]),
    "trailing space (uni-b once stripped)": ("POST", ACCOUNTS, {"name": "uni-b ", "weight": 1}, 422,
                                             ["surrounding whitespace"]),
    "capitals": ("POST", ACCOUNTS, {"name": "Uni-C", "weight": 1}, 422, ["lowercase"]),
    "another parent's prefix": ("POST", ACCOUNTS, {"name": "uni-b/lab", "weight": 1, "parent": "uni-a"}, 422,
                                ["does not match its parent uni-a"]),
    "moved out of its prefix": ("PATCH", f"{ACCOUNTS}/uni-a/nlp", {"parent": "uni-b"}, 422,
                                ["does not match its parent uni-b"]),
    "made top-level with a slash": ("PATCH", f"{ACCOUNTS}/uni-a/nlp", {"parent": None}, 422,
                                    ["a top-level account's name has no '/'"]),
}

HOLD = {"model": "hold", "slices": 1, "account": "uni-a/nlp"}
CYCLEGAN = {"model": "cyclegan", "framework": "pytorch", "slices": 4, "account": "uni-a/nlp"}
S = f"seconds must be {limits.HOLD_SECONDS.describe()}"
SUBMISSIONS = {
    "hold of a year": ("POST", "/v1/jobs", {**HOLD, "seconds": 365 * 86400}, 422, [S]),
    "hold of 1e300 s": ("POST", "/v1/jobs", {**HOLD, "seconds": 1e300}, 422, [S]),
    "hold of Infinity": ("POST", "/v1/jobs", json.dumps(HOLD)[:-1].encode() + b', "seconds": Infinity}', 422, [S]),
    "hold of NaN": ("POST", "/v1/jobs", json.dumps(HOLD)[:-1].encode() + b', "seconds": NaN}', 422, [S]),
    "hold of -1 s": ("POST", "/v1/jobs", {**HOLD, "seconds": -1}, 422, [S]),
    "CycleGAN of 300M px": ("POST", "/v1/jobs", {**CYCLEGAN, "image_size": 300_000_000}, 422,
                            [f"image_size must be {limits.IMAGE_SIZE.describe()}"]),
    "CycleGAN of 2^31 px": ("POST", "/v1/jobs", {**CYCLEGAN, "image_size": 2**31}, 422, ["image_size must be"]),
    "steps 2^40": ("POST", "/v1/jobs", {**CYCLEGAN, "steps": 2**40}, 422, [f"steps must be {limits.STEPS.describe()}"]),
    "batch 2^63": ("POST", "/v1/jobs", {**CYCLEGAN, "batch_size": 2**63}, 422, ["batch_size must be"]),
    "slices 2^63": ("POST", "/v1/jobs", {**HOLD, "seconds": 1, "slices": 2**63}, 422,
                    [f"slices must be {limits.JOB_SLICES.describe()}"]),
    "count 2^31": ("POST", "/v1/jobs", {**HOLD, "seconds": 1, "count": 2**31}, 422,
                   [f"count must be {limits.JOB_COUNT.describe()}"]),
    "account with NUL": ("POST", "/v1/jobs", {**HOLD, "seconds": 1, "account": "uni-a/nlp\x00"}, 422, ["account"]),
}


def _send(client, token, method, path, body):
    headers = {**bearer(token), "content-type": "application/json"}
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return client.request(method, path, content=content, headers=headers)


def _refused(seeded, client, token, cases):
    before = dump(seeded.engine)
    for what, (method, path, body, status, phrases) in cases.items():
        r = _send(client, token, method, path, body)
        assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
        detail = r.json()["detail"]
        assert set(r.json()) == {"detail"} and one_line(detail), f"{what}: {detail!r}"
        for phrase in phrases:
            assert phrase in detail, f"{what}: {phrase!r} not in {detail!r}"
        assert dump(seeded.engine) == before, f"{what} wrote something"


@pytest.mark.parametrize("cases", [WEIGHTS, COLUMNS, NULS, NAMES], ids=["weights", "columns", "nuls", "names"])
def test_admin_inputs_are_refused_with_the_range(seeded, client, cases):
    _refused(seeded, client, seeded.tokens["admin"], cases)


def test_institution_inputs_that_could_only_fail_later_are_refused_at_submit(seeded, client):
    _refused(seeded, client, seeded.tokens["a"], SUBMISSIONS)


def test_the_bounds_themselves_are_accepted(seeded, client):
    h = bearer(seeded.tokens["admin"])
    ok = [("PATCH", f"{ACCOUNTS}/uni-b", {"weight": limits.WEIGHT.high, "max_pending": limits.MAX_PENDING.high}),
          ("PATCH", f"{ACCOUNTS}/uni-a/nlp", {"weight": limits.WEIGHT.low}),
          ("POST", "/v1/admin/tokens", {"account": "uni-b", "expires": "3650d"}),
          ("PUT", "/v1/admin/settings/half_life", {"value": "1m"})]
    for method, path, body in ok:
        r = client.request(method, path, json=body, headers=h)
        assert r.status_code in (200, 201), f"{path}: {r.text}"
    r = client.post("/v1/jobs", json={**HOLD, "seconds": limits.HOLD_SECONDS.high}, headers=bearer(seeded.tokens["a"]))
    assert r.status_code == 201, r.text
    assert client.get("/v1/share", headers=bearer(seeded.tokens["b"])).status_code == 200


def test_a_leaf_with_jobs_never_becomes_a_parent(seeded, client):
    admin = bearer(seeded.tokens["admin"])
    for account in ("uni-a/nlp", "uni-b"):
        r = client.post("/v1/jobs", json={**HOLD, "seconds": 5, "account": account}, headers=admin)
        assert r.status_code == 201, r.text
    before = dump(seeded.engine)
    r = client.patch(f"{ACCOUNTS}/uni-b", json={"parent": "uni-a/nlp"}, headers=admin)
    assert r.status_code == 409 and r.json()["detail"] == \
        "account uni-a/nlp has jobs of its own; jobs run on leaf accounts only", r.text
    r = client.post(ACCOUNTS, json={"name": "uni-b/lab", "weight": 1, "parent": "uni-b"}, headers=admin)
    assert r.status_code == 409 and "uni-b has jobs of its own" in r.json()["detail"], r.text
    assert dump(seeded.engine) == before
    # a leaf with jobs may move under a leaf without any: no account ends up with both
    r = client.patch(f"{ACCOUNTS}/uni-b", json={"parent": "uni-a/vision"}, headers=admin)
    assert r.status_code == 200 and r.json()["parent"] == "uni-a/vision", r.text
