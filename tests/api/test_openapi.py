"""The OpenAPI document tells the truth: declared errors with one schema, the 422 body as
sent, a correct Allow header on 405; and /healthz reports a failing scheduling loop."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from api_helpers import bearer
from scheduler.api import create_app
from scheduler.api.app import FAILING_AFTER

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
def document(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(document):
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def test_every_error_answer_has_the_one_error_schema(document):
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorBody"]["required"] == ["detail"]
    assert schemas["ErrorBody"]["properties"]["detail"]["type"] == "string"
    for path, method, op in operations(document):
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")) and path != "/healthz":
                assert answer["content"]["application/json"]["schema"] == ERROR_REF, (method, path, status)


def test_routes_declare_the_errors_they_can_send(document):
    for path, method, op in operations(document):
        declared = {int(s) for s in op["responses"]}
        if path == "/healthz":
            assert declared == {200, 503}
            continue
        assert {401, 403} <= declared, (method, path)  # every route is behind a token
        if "requestBody" in op:
            assert {400, 413, 422} <= declared, (method, path)
        if "{" in path and path != "/v1/admin/capacity/{node}":  # PUT a node creates it
            assert 404 in declared, (method, path)
        if path.startswith("/v1/admin"):
            assert op["security"] == [{"HTTPBearer": []}]


def test_the_declared_422_body_is_the_one_sent(client, seeded, document):
    r = client.post("/v1/jobs", headers=bearer(seeded.tokens["a"]), json={"model": "hold", "slices": "two"})
    assert r.status_code == 422
    assert set(r.json()) == {"detail"} and isinstance(r.json()["detail"], str) and "\n" not in r.json()["detail"]
    r = client.get("/v1/jobs/0", headers=bearer(seeded.tokens["a"]))  # a path parameter out of range
    assert r.status_code == 422 and set(r.json()) == {"detail"}


def test_a_405_lists_every_method_of_the_path(client, document):
    for path, item in document["paths"].items():
        declared = {m.upper() for m in item if m in METHODS}
        concrete = path.replace("{job_id}", "1").replace("{name}", "x").replace("{node}", "n") \
            .replace("{token}", "t").replace("{key}", "k")
        refused = next(m for m in ("DELETE", "PUT", "PATCH", "POST", "GET") if m not in declared)
        r = client.request(refused, concrete)
        assert r.status_code == 405, (refused, path)
        assert set(r.headers["allow"].split(", ")) == declared, (path, r.headers["allow"])
        assert r.json() == {"detail": "Method Not Allowed"}


def test_a_405_on_a_starlette_route_keeps_head():
    from sqlalchemy import create_engine
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    route = Route("/metrics", lambda _r: PlainTextResponse("x"), methods=["GET"])
    app = create_app(create_engine("sqlite://"), clock=lambda: datetime.now(timezone.utc), extra_routes=[route])
    with TestClient(app) as c:
        r = c.post("/metrics")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


@dataclass(frozen=True)
class Health:
    consecutive_failures: int = 0
    failures_total: int = 0
    last_error: str | None = None
    last_success_at: datetime | None = None
    failing_since: datetime | None = None


def test_healthz_without_a_loop_is_plain_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_healthz_reports_a_loop_that_keeps_failing(seeded):
    at = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    state = [Health(last_success_at=at)]
    app = create_app(seeded.engine, clock=seeded.clock, health=lambda: state[-1])
    with TestClient(app) as c:
        r = c.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "consecutive_failures": 0, "failures_total": 0,
                            "last_success_at": at.isoformat()}
        # a failure or two is retried and not yet unhealthy
        state.append(Health(FAILING_AFTER - 1, 5, "boom", at, at + timedelta(seconds=1)))
        assert c.get("/healthz").status_code == 200
        state.append(Health(FAILING_AFTER, 6, "ValueError: weight is not finite\n  traceback line", at,
                            at + timedelta(seconds=1)))
        r = c.get("/healthz")
        assert r.status_code == 503
        assert r.json() == {"status": "failing", "consecutive_failures": FAILING_AFTER, "failures_total": 6,
                            "last_success_at": at.isoformat(), "failing_since": (at + timedelta(seconds=1)).isoformat(),
                            "last_error": "ValueError"}
        state.append(Health(0, 6, None, at + timedelta(minutes=1), None))  # one good cycle: healthy again
        assert c.get("/healthz").json()["status"] == "ok"
