"""``create_app``: the FastAPI application, its error shape and its body limit.

Invariants:
- Every error body is ``{"detail": "<one line>"}``: 400 malformed JSON, 401 no or
  bad token, 403 not an admin, 404 missing or not yours (the same), 409 refused
  in the current state, 413 body over ``MAX_BODY_BYTES``, 422 invalid request.
- The OpenAPI document says so: every route declares its error statuses with the
  one ``openapi.ErrorBody`` schema (FastAPI's validation-error list never appears),
  and a 405 carries ``Allow`` with every method the path takes.
- ``/healthz`` needs no token; with the loop's ``health`` it answers 503 once
  ``FAILING_AFTER`` cycles in a row have failed.
- Request bodies are capped twice: by Content-Length before anything is read, and
  by counting the streamed bytes (chunked uploads), before any handler runs.
- The app holds no global state: engine, clock, the change hook and where the
  sandbox's status comes from (``sandbox_status``) are arguments.
- Handlers are ``async def`` and run their short transactions on the event loop
  (see ``deps``), except submissions, which are group-committed off the loop
  (``services.committer``), and uploads, which check their token and account in the
  thread pool and then read their body with no transaction open (``routes_jobs.upload``);
  a route added through ``extra_routes`` may be sync or async.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from scheduler.services.script_gate import StatusSource
from scheduler.text import first_line

if TYPE_CHECKING:  # the loop's health, as /metrics reads it too (the api never imports the loop)
    from scheduler.metrics.exporter import LoopHealthLike

API_PREFIX = "/v1"
MAX_BODY_BYTES = 64 * 1024


def create_app(
    engine: Engine, *, clock: Callable[[], datetime], on_change: Callable[[], None] | None = None,
    extra_routes: Sequence[BaseRoute] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
    health: Callable[[], LoopHealthLike] | None = None, results_dir: str | None = None,
    sandbox_status: StatusSource | None = None,
) -> FastAPI:
    """The API over ``engine``. ``on_change`` runs after a committed submit or cancel;
    ``extra_routes`` (e.g. ``metrics_route(registry)``) are added as given, outside the
    OpenAPI document; ``health`` (the loop's ``health``) feeds ``/healthz``;
    ``results_dir`` (the executor's, where each job's directory is) lets
    ``/v1/jobs/{id}/logs`` read the tasks' own output. Submissions are group-committed
    (``services.committer``), off the event loop. ``sandbox_status``
    says whether script jobs (and their uploads) are taken (``services.script_gate``: 409
    when no sandbox starts and unsandboxed scripts were not accepted); None: not checked."""
    from scheduler.api import routes_admin, routes_control, routes_jobs, routes_reports
    from scheduler.api.openapi import error_schema_only
    from scheduler.services.committer import Committer
    from scheduler.services.errors import domain_classes
    from scheduler.services.estimates import EstimateCache
    from scheduler.services.jobs import write_arrays

    app = FastAPI(title="fairgpu", version="1", summary="Fair-share GPU slices for institutions.")
    app.state.engine = engine
    app.state.clock = clock
    app.state.on_change = on_change
    app.state.health = health
    app.state.results_dir = results_dir
    app.state.sandbox_status = sandbox_status
    app.state.estimates = EstimateCache()  # one replay of the queue, kept ~2 s (services.estimates)
    app.state.committer = Committer(engine, after_commit=lambda: app.state.on_change and app.state.on_change(),
                                    refusals=(*domain_classes(), HTTPException), flush=write_arrays)

    app.include_router(health_router())
    app.include_router(routes_jobs.router, prefix=API_PREFIX)
    app.include_router(routes_control.router, prefix=API_PREFIX)
    app.include_router(routes_admin.router, prefix=API_PREFIX)
    app.include_router(routes_reports.router, prefix=API_PREFIX)
    for route in extra_routes or ():
        app.router.routes.append(route)
    _install_error_handlers(app)
    from scheduler.runtime.archive import ARCHIVE_MAX_BYTES

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, larger={f"{API_PREFIX}/uploads": ARCHIVE_MAX_BYTES})

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = error_schema_only(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi
    return app


# /healthz answers 503 once the loop has failed this many cycles in a row.
FAILING_AFTER = 3


def health_router() -> APIRouter:
    from scheduler.api.openapi import HealthBody

    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness of the API and of the scheduling loop (no token needed)",
                response_model=HealthBody, response_model_exclude_none=True,
                responses={503: {"model": HealthBody, "description": "The scheduling loop keeps failing: "
                                 f"{FAILING_AFTER} or more cycles in a row"}})
    async def healthz(request: Request):
        source = request.app.state.health
        if source is None:
            return HealthBody(status="ok")
        h = source()
        iso = lambda v: v.isoformat() if v is not None else None  # noqa: E731
        failing = h.consecutive_failures >= FAILING_AFTER
        body = HealthBody(status="failing" if failing else "ok", consecutive_failures=h.consecutive_failures,
                          failures_total=h.failures_total, last_success_at=iso(h.last_success_at),
                          failing_since=iso(h.failing_since),
                          # the error's kind only: this route needs no token, and a message can name accounts
                          last_error=h.last_error.split(":", 1)[0] if h.last_error else None)
        if failing:
            return JSONResponse(body.model_dump(exclude_none=True), status_code=503)
        return body

    return router


def _status_for(exc: Exception) -> int:
    """The HTTP status of a domain error, from the one table in ``services.errors``."""
    from scheduler.services.errors import classify

    outcome = classify(exc)
    return outcome.http_status if outcome is not None else 500


def _install_error_handlers(app: FastAPI) -> None:
    from scheduler.services.errors import domain_classes

    async def domain(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": first_line(exc, "error")}, status_code=_status_for(exc))

    for cls in domain_classes():
        app.add_exception_handler(cls, domain)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # a route that checks its token inside its own transaction (submissions) still
        # answers a bad token before a bad body, as the routes depending on `principal` do
        token_first = getattr(request.scope.get("endpoint"), "check_token_first", None)
        refused = await token_first(request) if token_first is not None else None
        if refused is not None:
            return JSONResponse({"detail": first_line(refused.detail, "error")}, status_code=refused.status_code,
                                headers=getattr(refused, "headers", None))
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
        loc = list(first.get("loc", ()))
        where = ".".join(str(p) for p in (loc[1:] if loc[:1] in (["body"], ["path"], ["query"]) else loc)) or "body"
        if first.get("type") == "extra_forbidden":
            message = f"unknown field {where}"
        elif first.get("type") == "missing":
            message = f"{where} is required"
        else:
            message = f"{where}: {first.get('msg', 'invalid')}"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        return JSONResponse({"detail": first_line(message, "error") + more}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names the first matching route's methods only
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return JSONResponse({"detail": first_line(exc.detail, "error")}, status_code=exc.status_code,
                            headers=headers or None)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope) -> list[str]:
    """Every method some route takes on this request's path. FastAPI has one route per
    method (and nests included routers), so each method is tried through the public
    ``matches`` of the top-level routes."""
    from starlette.routing import Match

    return [m for m in HTTP_METHODS
            if any(route.matches({**scope, "method": m})[0] is Match.FULL for route in app.router.routes)]


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (declared or streamed); the paths
    in ``larger`` (uploads) have a limit of their own."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        if limit != self.max_bytes:
            await BodyLimit(self.app, limit)(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "invalid Content-Length header")
                    return
                if declared > self.max_bytes:
                    await _reply(send, 413, self._message())
                    return
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body too large (limit {self.max_bytes // 1024} KiB)"


async def _reply(send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
