"""GET /v1/report: the admin sees all, an institution its own subtree only; bad input is one 4xx line."""
from __future__ import annotations

import pytest
from report_history import EXPECTED, UNTIL, build

PERIOD = {"since": "2026-11-02", "until": "2026-11-02T04:00:00Z"}


@pytest.fixture
def api(sqlite_url):
    from fastapi.testclient import TestClient

    from scheduler.api import create_app
    from scheduler.services import auth
    from scheduler.store import init_db, make_engine, session_scope

    engine = make_engine(sqlite_url)
    init_db(engine)
    build(engine)
    with session_scope(engine) as s:
        tokens = {who: auth.issue_token(s, account=account, name=who, expires_s=None, at=UNTIL)
                  for who, account in (("admin", None), ("north", "north"), ("nlp", "north/nlp"))}
    with TestClient(create_app(engine, clock=lambda: UNTIL)) as client:
        client.tokens = tokens
        yield client
    engine.dispose()


def get(api, who, **params):
    return api.get("/v1/report", params={**PERIOD, **params},
                   headers={"Authorization": f"Bearer {api.tokens[who]}"} if who else {})


def test_the_admin_sees_every_account_with_the_exact_figures(api):
    r = get(api, "admin")
    assert r.status_code == 200
    rows = {row["account"]: row for row in r.json()["accounts"]}
    assert list(rows) == list(EXPECTED)
    assert rows["south"]["slice_hours"] == pytest.approx(2.0)
    assert rows["north"]["owed_slice_hours"] == pytest.approx(10.75)


def test_an_institution_sees_its_own_subtree(api):
    body = get(api, "north").json()
    assert [row["account"] for row in body["accounts"]] == ["north", "north/cv", "north/nlp"]
    assert [row["account"] for row in get(api, "north", account="north/cv").json()["accounts"]] == ["north/cv"]
    assert [row["account"] for row in get(api, "nlp").json()["accounts"]] == ["north/nlp"]


@pytest.mark.parametrize("who, account", [("north", "south"), ("nlp", "north"), ("nlp", "north/cv"),
                                          ("admin", "nowhere")])
def test_another_subtree_is_not_found(api, who, account):
    r = get(api, who, account=account)
    assert (r.status_code, r.json()) == (404, {"detail": f"unknown account {account}"})


def test_a_token_is_needed(api):
    assert get(api, None).status_code == 401


@pytest.mark.parametrize("params, status, detail", [
    ({"since": "2026-11-05"}, 422, "the period must end after it starts"),
    ({"since": "not-a-date"}, 422, "since must be a date (YYYY-MM-DD) or an ISO 8601 time (got 'not-a-date')"),
    ({"until": "2026-02-30"}, 422, "until must be a date"),
    ({"buckets": 501}, 422, "buckets:"),
])
def test_bad_input_is_one_line(api, params, status, detail):
    r = get(api, "admin", **params)
    assert r.status_code == status and r.json()["detail"].startswith(detail)
    assert "\n" not in r.json()["detail"]


def test_the_timeline_comes_on_request(api):
    body = get(api, "north", buckets=2).json()
    assert len(body["timeline"]) == 2
    assert set(body["timeline"][1]["owed"]) == {"north", "north/cv", "north/nlp"}  # never south
