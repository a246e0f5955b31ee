"""Time limits and the inherited account settings through the API: ``time_limit_s`` at
submit, and ``default_time_s``, ``max_time_s``, ``allow_scripts`` on accounts."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from api_helpers import bearer

H, D = 3600.0, 86_400.0
HOLD = {"model": "hold", "seconds": 5, "slices": 1}
ACCOUNTS = "/v1/admin/accounts"


def limits_of(engine, ids) -> list[float | None]:
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, time_limit_s FROM job")).all())
    return [rows[i] for i in ids]


@pytest.fixture
def limited(seeded, client):
    """uni-a: 1h by default, at most 1d; uni-a/nlp: at most 2h of its own."""
    h = bearer(seeded.tokens["admin"])
    r = client.patch(f"{ACCOUNTS}/uni-a", json={"default_time_s": H, "max_time_s": D}, headers=h)
    assert r.status_code == 200, r.text
    r = client.patch(f"{ACCOUNTS}/uni-a/nlp", json={"max_time_s": 2 * H}, headers=h)
    assert r.status_code == 200, r.text
    return seeded


def test_a_job_gets_the_limit_it_asks_for_or_its_accounts(limited, client):
    h = bearer(limited.tokens["a"])
    asked = client.post("/v1/jobs", json={**HOLD, "account": "uni-a/vision", "time_limit_s": 5400}, headers=h)
    default = client.post("/v1/jobs", json={**HOLD, "account": "uni-a/vision"}, headers=h)
    array = client.post("/v1/jobs", json={**HOLD, "account": "uni-a/nlp", "time_limit_s": 7200, "count": 3}, headers=h)
    none = client.post("/v1/jobs", json=HOLD, headers=bearer(limited.tokens["b"]))
    assert {r.status_code for r in (asked, default, array, none)} == {201}
    ids = [asked.json()["id"], default.json()["id"], *array.json()["ids"], none.json()["id"]]
    assert limits_of(limited.engine, ids) == [5400, H, 2 * H, 2 * H, 2 * H, None]
    shown = client.get(f"/v1/jobs/{ids[0]}", headers=h).json()
    assert shown["time_limit_s"] == 5400


@pytest.mark.parametrize("body, status, detail", [
    ({"account": "uni-a/nlp", "time_limit_s": 3 * H}, 422,
     "time limit 3h exceeds the maximum of 2h for account uni-a/nlp"),
    ({"account": "uni-a/vision", "time_limit_s": 2 * D, "count": 2}, 422,
     "time limit 2d exceeds the maximum of 1d for account uni-a/vision"),
    ({"account": "uni-a/vision", "time_limit_s": 0}, 422, "time_limit_s must be 1 to 2,592,000 s (got 0.0)"),
    ({"account": "uni-a/vision", "time_limit_s": 2_592_001}, 422, "time_limit_s must be 1 to 2,592,000 s"),
    ({"account": "uni-a/vision", "time_limit_s": "2h"}, 422, "time_limit_s: Input should be a valid number"),
])
def test_a_bad_time_limit_is_refused_and_writes_nothing(limited, client, body, status, detail):
    before = limited.counts()
    r = client.post("/v1/jobs", json={**HOLD, **body}, headers=bearer(limited.tokens["a"]))
    assert (r.status_code, set(r.json())) == (status, {"detail"}), r.text
    assert r.json()["detail"].startswith(detail) and "\n" not in r.json()["detail"]
    assert limited.counts() == before


def test_accounts_take_and_show_their_own_and_effective_settings(seeded, client):
    h = bearer(seeded.tokens["admin"])
    r = client.post(ACCOUNTS, json={"name": "uni-c", "weight": 1, "default_time_s": 1800, "max_time_s": H,
                                    "allow_scripts": True}, headers=h)
    assert r.status_code == 201, r.text
    assert (r.json()["default_time_s"], r.json()["max_time_s"], r.json()["allow_scripts"]) == (1800, H, True)
    r = client.post(ACCOUNTS, json={"name": "uni-c/lab", "weight": 1, "parent": "uni-c"}, headers=h)
    assert r.json()["effective"] == {"default_time_s": 1800, "max_time_s": H, "allow_scripts": True,
                                     "from": {"default_time_s": "uni-c", "max_time_s": "uni-c",
                                              "allow_scripts": "uni-c"}}
    r = client.patch(f"{ACCOUNTS}/uni-c/lab", json={"allow_scripts": False, "max_time_s": 2 * H}, headers=h)
    assert r.status_code == 200 and r.json()["effective"]["allow_scripts"] is False
    r = client.patch(f"{ACCOUNTS}/uni-c/lab", json={"allow_scripts": None, "max_time_s": None}, headers=h)
    assert r.json()["allow_scripts"] is None and r.json()["effective"]["allow_scripts"] is True
    assert r.json()["effective"]["max_time_s"] == H
    r = client.patch(f"{ACCOUNTS}/uni-c", json={"weight": 2}, headers=h)  # fields not sent stay
    assert (r.json()["default_time_s"], r.json()["allow_scripts"]) == (1800, True)


@pytest.mark.parametrize("method, path, body, status, detail", [
    ("POST", ACCOUNTS, {"name": "x", "weight": 1, "default_time_s": 2 * H, "max_time_s": H}, 409,
     "account x: default time 2h exceeds its maximum of 1h"),
    ("PATCH", f"{ACCOUNTS}/uni-a", {"max_time_s": 30 * 60}, 409,
     "account uni-a: default time 1h exceeds its maximum of 30m"),
    ("PATCH", f"{ACCOUNTS}/uni-a", {"max_time_s": 90 * 60}, 409,  # vision's own default is 2h
     "account uni-a/vision: default time 2h exceeds the maximum of 90m inherited from uni-a"),
    ("PATCH", f"{ACCOUNTS}/uni-a/nlp", {"max_time_s": 30 * 60}, 409,
     "account uni-a/nlp: default time 1h inherited from uni-a exceeds its maximum of 30m"),
    ("PATCH", f"{ACCOUNTS}/uni-a/nlp", {"default_time_s": 3 * H}, 409,
     "account uni-a/nlp: default time 3h exceeds its maximum of 2h"),
    ("POST", ACCOUNTS, {"name": "x", "weight": 1, "max_time_s": 0}, 422,
     "account x: max_time_s must be 1 to 2,592,000 s (got 0"),
    ("PATCH", f"{ACCOUNTS}/uni-b", {"default_time_s": 1e12}, 422,
     "account uni-b: default_time_s must be 1 to 2,592,000 s (got 1000000000000.0)"),
    ("PATCH", f"{ACCOUNTS}/uni-b", {"allow_scripts": "yes"}, 422, "allow_scripts: Input should be a valid boolean"),
    ("POST", ACCOUNTS, {"name": "x", "weight": 1, "allow_scripts": 1}, 422,
     "allow_scripts: Input should be a valid boolean"),
])
def test_bad_account_settings_are_refused_and_write_nothing(limited, client, method, path, body, status, detail):
    h = bearer(limited.tokens["admin"])
    assert client.patch(f"{ACCOUNTS}/uni-a/vision", json={"default_time_s": 2 * H}, headers=h).status_code == 200
    before = client.get(ACCOUNTS, headers=h).json()
    r = client.request(method, path, json=body, headers=h)
    assert (r.status_code, set(r.json())) == (status, {"detail"}), r.text
    assert r.json()["detail"].startswith(detail), r.text
    assert client.get(ACCOUNTS, headers=h).json() == before
