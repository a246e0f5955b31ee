"""``/metrics``: the Prometheus exposition, and who may read which series.

Invariants:
- Without a token, or with an institution's token, a scrape gets the cluster-wide
  series only: no series that names an account (``fairgpu_account_*``), since the API
  hides each institution's accounts, weights, usage and queues from the others.
- The admin token and scrape tokens (``fairgpu admin token issue --scrape``) get
  every series. A scrape token reaches nothing else (``deps.principal`` refuses it).
- A token that is sent but unknown, revoked or expired is 401, as on the API, so a
  misconfigured Prometheus shows its target down instead of quietly losing series.
- The route is sync: Starlette runs it in its thread pool, so rendering a large
  exposition does not hold up the event loop.
"""
from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.responses import Response
from starlette.routing import Route

from scheduler.api.deps import now
from scheduler.services.auth import authenticate
from scheduler.store import session_scope

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def metrics_route(registry, path: str = "/metrics") -> Route:
    """A GET route serving ``registry`` under the access rule above; give it to
    ``create_app(extra_routes=...)`` (it reads the app's engine and clock)."""
    from scheduler.metrics.exporter import render

    def metrics(request: Request) -> Response:
        body, content_type = render(registry, per_account=may_scrape(request))
        return Response(content=body, media_type=content_type)

    return Route(path, metrics, methods=["GET"])


def may_scrape(request: Request) -> bool:
    """True for the admin or a scrape token; False for none or an institution's token."""
    header = request.headers.get("authorization")
    if header is None:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "malformed Authorization header (send 'Authorization: Bearer <token>')",
                            headers=UNAUTHORIZED)
    with session_scope(request.app.state.engine) as session:
        who = authenticate(session, token.strip(), now(request))
    if who is None:
        raise HTTPException(401, "invalid, expired or revoked token", headers=UNAUTHORIZED)
    return who.may_scrape
