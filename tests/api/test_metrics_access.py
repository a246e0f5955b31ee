"""/metrics is not a side door: per-account series need the admin token or a scrape token,
and a scrape token reaches nothing but /metrics. Both sides of the rule, on a real database."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api_helpers import bearer
from scheduler.api import create_app, metrics_route
from scheduler.metrics.exporter import build_registry
from scheduler.metrics.view import AccountView, ClusterView
from scheduler.services import auth
from scheduler.store import session_scope

ROUTES = [("GET", "/v1/whoami"), ("GET", "/v1/jobs"), ("GET", "/v1/share"), ("GET", "/v1/jobs/1"),
          ("POST", "/v1/jobs"), ("GET", "/v1/admin/accounts"), ("GET", "/v1/admin/tokens"),
          ("POST", "/v1/admin/tokens")]


def view() -> ClusterView:
    accounts = tuple(AccountView(name, None, 1.0, 0, None, 4.0, 2.0, 1, {"Priority": 1})
                     for name in ("uni-a", "uni-b"))
    return ClusterView(at=1000.0, capacity_slices=8, free_slices=4, jain_index=1.0, max_share_deviation=0.0,
                       usage_gini=0.0, ray_pending_tasks=0, accounts=accounts)


@pytest.fixture
def scrape_token(seeded) -> str:
    with session_scope(seeded.engine) as s:
        return auth.issue_token(s, account=None, name="prometheus", expires_s=None, at=seeded.clock(),
                                scope=auth.SCRAPE)


@pytest.fixture
def served(seeded):
    registry, metrics = build_registry(view)
    metrics.ensure_account("uni-a")
    metrics.admitted("uni-a", 3.0)
    app = create_app(seeded.engine, clock=seeded.clock, extra_routes=[metrics_route(registry)])
    with TestClient(app) as c:
        yield c


def families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def per_account(fams: dict) -> set[str]:
    return {name for name, samples in fams.items()
            if name.startswith("fairgpu_account_") or any("account" in s.labels for s in samples)}


def scrape(client, token) -> dict:
    r = client.get("/metrics", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return families(r.text)


@pytest.mark.parametrize("role", [None, "a", "b", "a_vision"])
def test_without_a_scrape_right_only_cluster_series(served, seeded, role):
    fams = scrape(served, seeded.tokens[role] if role else None)
    assert per_account(fams) == set()
    assert fams["fairgpu_capacity_slices"][0].value == 8  # cluster-wide series stay public
    assert fams["fairgpu_schedule_cycle_failures"][0].value == 0
    assert "fairgpu_schedule_cycle_duration_seconds" in fams


@pytest.mark.parametrize("role", ["admin", "scrape"])
def test_admin_and_scrape_tokens_see_every_account(served, seeded, scrape_token, role):
    fams = scrape(served, scrape_token if role == "scrape" else seeded.tokens["admin"])
    assert {"fairgpu_account_weight", "fairgpu_account_pending_jobs", "fairgpu_account_admissions",
            "fairgpu_account_queue_wait_seconds"} <= per_account(fams)
    assert {s.labels["account"] for s in fams["fairgpu_account_weight"]} == {"uni-a", "uni-b"}
    assert fams["fairgpu_capacity_slices"][0].value == 8


@pytest.mark.parametrize("token", ["revoked", "expired", "fg_not-a-token"])
def test_a_bad_token_is_refused_not_downgraded(served, seeded, token):
    r = served.get("/metrics", headers=bearer(seeded.tokens.get(token, token)))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "invalid, expired or revoked token"}
    r = served.get("/metrics", headers={"Authorization": "Basic dTpw"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]


@pytest.mark.parametrize("method,path", ROUTES)
def test_a_scrape_token_reaches_nothing_but_metrics(served, scrape_token, method, path):
    r = served.request(method, path, headers=bearer(scrape_token), json={} if method == "POST" else None)
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": "a scrape token can read /metrics only"}


def test_scrape_tokens_are_listed_with_their_scope_and_never_count_as_admin(seeded, scrape_token, tmp_path):
    at = seeded.clock()
    with session_scope(seeded.engine) as s:
        rows = {r["name"]: r for r in auth.list_tokens(s, at)}
        assert rows["prometheus"]["scope"] == "scrape" and rows["prometheus"]["admin"] is False
        assert rows["admin"]["scope"] == "full" and rows["admin"]["admin"] is True
        who = auth.authenticate(s, scrape_token, at)
        assert who.may_scrape and not who.is_admin and who.accounts == frozenset() and not who.may_see("uni-a")
        # with the admin token revoked, a scrape token does not stand in for it at start-up
        auth.revoke_token(s, seeded.tokens["admin"], at)
        assert auth.ensure_admin_token(s, tmp_path / "admin.token", at) is not None


def test_a_scrape_token_belongs_to_no_account(seeded):
    from scheduler.services.errors import DomainError

    with session_scope(seeded.engine) as s, pytest.raises(DomainError, match="belongs to no account"):
        auth.issue_token(s, account="uni-a", name="", expires_s=None, at=seeded.clock(), scope=auth.SCRAPE)
    with session_scope(seeded.engine) as s, pytest.raises(DomainError, match="scope must be one of"):
        auth.issue_token(s, account=None, name="", expires_s=None, at=seeded.clock(), scope="root")
