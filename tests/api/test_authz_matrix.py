"""The authorisation matrix: every role against every endpoint, on SQLite and PostgreSQL.

Roles: admin, a (institution uni-a), a_vision (its sub-account), b (institution
uni-b), none (no token), revoked, expired. Cells are the expected HTTP status.
Every refused request must leave every table exactly as it was.
"""
from __future__ import annotations

import itertools

from scheduler.services import jobs
from scheduler.store import session_scope

from api_helpers import T0, bearer

ROLES = ("admin", "a", "a_vision", "b", "none", "revoked", "expired")
_n = itertools.count()


def _job(seeded, account="uni-a/vision") -> int:
    with session_scope(seeded.engine) as s:
        return jobs.submit_array(s, count=1, account=account, model="hold", framework=None, mode="train",
                                 slices=1, spec={"seconds": 1}, at=T0)[0]


def U(admin, a, a_vision, b):  # noqa: N802 - a row of the matrix; the three bad tokens always get 401
    return dict(admin=admin, a=a, a_vision=a_vision, b=b, none=401, revoked=401, expired=401)


# (method, path, body or None, expected by role). "{ja}" is a job of uni-a/vision; "{fresh}" (a job),
# "{doomed}" (an account) and "{victim}" (a token) are made anew for each request; "{n}" is a fresh number.
MATRIX = [
    ("GET", "/v1/whoami", None, U(200, 200, 200, 200)),
    ("GET", "/v1/jobs", None, U(200, 200, 200, 200)),
    ("GET", "/v1/jobs?all=true&account=uni-a/vision", None, U(200, 200, 200, 404)),
    ("POST", "/v1/jobs", {"model": "hold", "seconds": 1, "slices": 1, "account": "uni-a/vision"},
     U(201, 201, 201, 404)),
    ("POST", "/v1/jobs", {"model": "hold", "seconds": 1, "slices": 1, "account": "uni-a/nlp"},
     U(201, 201, 404, 404)),
    ("GET", "/v1/jobs/{ja}", None, U(200, 200, 200, 404)),
    ("GET", "/v1/jobs/{ja}/logs", None, U(200, 200, 200, 404)),
    ("GET", "/v1/jobs/999999", None, U(404, 404, 404, 404)),
    ("POST", "/v1/jobs/{fresh}/cancel", None, U(200, 200, 200, 404)),
    ("GET", "/v1/share", None, U(200, 200, 200, 200)),
    ("GET", "/v1/share?account=uni-a", None, U(200, 200, 404, 404)),
    ("GET", "/v1/share/explain", None, U(200, 200, 200, 200)),
    ("GET", "/v1/share/explain?account=uni-a", None, U(200, 200, 404, 404)),
    ("GET", "/v1/jobs/{ja}/logs?tail=5&since=1:0", None, U(200, 200, 200, 404)),
    ("GET", "/v1/admin/accounts", None, U(200, 403, 403, 403)),
    ("POST", "/v1/admin/accounts", {"name": "new-{n}", "weight": 1}, U(201, 403, 403, 403)),
    ("PATCH", "/v1/admin/accounts/uni-b", {"weight": 2}, U(200, 403, 403, 403)),
    ("DELETE", "/v1/admin/accounts/{doomed}", None, U(200, 403, 403, 403)),
    ("GET", "/v1/admin/capacity", None, U(200, 403, 403, 403)),
    ("PUT", "/v1/admin/capacity/n2", {"gpus": 1, "slices_per_gpu": 4}, U(200, 403, 403, 403)),
    ("GET", "/v1/admin/tokens", None, U(200, 403, 403, 403)),
    ("POST", "/v1/admin/tokens", {"account": "uni-b", "expires": "30d"}, U(201, 403, 403, 403)),
    ("DELETE", "/v1/admin/tokens/{victim}", None, U(200, 403, 403, 403)),
    ("GET", "/v1/admin/settings", None, U(200, 403, 403, 403)),
    ("GET", "/v1/admin/settings/algorithm", None, U(200, 403, 403, 403)),
    ("PUT", "/v1/admin/settings/preemption", {"value": "off"}, U(200, 403, 403, 403)),
]


def _fill(text: str, seeded, ja: int, client) -> str:
    if "{fresh}" in text:
        text = text.replace("{fresh}", str(_job(seeded)))
    if "{doomed}" in text:
        from scheduler.services.accounts import add_account

        name = f"doomed-{next(_n)}"
        with session_scope(seeded.engine) as s:
            add_account(s, name, weight=1)
        text = text.replace("{doomed}", name)
    if "{victim}" in text:
        r = client.post("/v1/admin/tokens", json={"account": "uni-b"}, headers=bearer(seeded.tokens["admin"]))
        text = text.replace("{victim}", str(r.json()["id"]))
    return text.replace("{ja}", str(ja)).replace("{n}", str(next(_n)))


def test_every_role_against_every_endpoint(seeded, client):
    from scheduler.services.accounts import set_account

    with session_scope(seeded.engine) as s:  # the matrix submits more than the seeded limit of 3
        set_account(s, "uni-a/vision", max_pending=None)
    ja = _job(seeded)
    failures = []
    for (method, path, body, expected), role in itertools.product(MATRIX, ROLES):
        url = _fill(path, seeded, ja, client)
        payload = {k: _fill(v, seeded, ja, client) if isinstance(v, str) else v for k, v in (body or {}).items()}
        before = seeded.counts()
        r = client.request(method, url, json=payload if body is not None else None,
                           headers=bearer(seeded.tokens.get(role)))
        if r.status_code != expected[role]:
            failures.append(f"{role} {method} {url}: {r.status_code} (wanted {expected[role]}) {r.text}")
        if r.status_code >= 400:
            assert set(r.json()) == {"detail"} and "\n" not in r.json()["detail"]
            assert seeded.counts() == before, f"{role} {method} {url} wrote on refusal"
        if r.status_code == 401:
            assert r.headers["www-authenticate"] == "Bearer"
    assert not failures, "\n".join(failures)


def test_an_institution_never_sees_anothers_jobs_or_share(seeded, client):
    ja, jb = _job(seeded), _job(seeded, "uni-b")
    b = bearer(seeded.tokens["b"])
    assert [j["id"] for j in client.get("/v1/jobs?all=true", headers=b).json()] == [jb]
    assert {r["account"] for r in client.get("/v1/share", headers=b).json()} == {"uni-b"}
    missing, foreign = client.get("/v1/jobs/424242", headers=b), client.get(f"/v1/jobs/{ja}", headers=b)
    assert (missing.status_code, foreign.status_code) == (404, 404)
    assert foreign.json()["detail"] == f"no job {ja}" and missing.json()["detail"] == "no job 424242"
    a = bearer(seeded.tokens["a"])
    assert [j["id"] for j in client.get("/v1/jobs", headers=a).json()] == [ja]
    assert {r["account"] for r in client.get("/v1/share", headers=a).json()} == {"uni-a", "uni-a/vision",
                                                                                 "uni-a/nlp"}
    admin = bearer(seeded.tokens["admin"])
    assert [j["id"] for j in client.get("/v1/jobs", headers=admin).json()] == [ja, jb]


def test_open_routes_need_no_token(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    schema = client.get("/openapi.json").json()
    assert "/v1/jobs" in schema["paths"] and "HTTPBearer" in schema["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200
