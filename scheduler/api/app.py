"""``create_app``: the FastAPI application, its error shape and its body limit.

Invariants:
- Every error body is ``{"detail": "<one line>"}``: 400 malformed JSON, 401 no or
  bad token, 403 not an admin, 404 missing or not yours (the same), 409 refused
  in the current state, 413 body over ``MAX_BODY_BYTES``, 422 invalid request.
- Request bodies are capped twice: by Content-Length before anything is read, and
  by counting the streamed bytes (chunked uploads), before any handler runs.
- The app holds no global state: engine, clock and the change hook are arguments.
- Handlers are ``async def`` and run their short transactions on the event loop
  (see ``deps``); a route added through ``extra_routes`` may be sync or async.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

API_PREFIX = "/v1"
MAX_BODY_BYTES = 64 * 1024


def create_app(
    engine: Engine, *, clock: Callable[[], datetime], on_change: Callable[[], None] | None = None,
    extra_routes: Sequence[BaseRoute] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The API over ``engine``. ``on_change`` runs after a committed submit or cancel;
    ``extra_routes`` (e.g. ``/metrics``) are added as given, without authentication."""
    from scheduler.api import routes_admin, routes_jobs

    app = FastAPI(title="fairgpu", version="1", summary="Fair-share GPU slices for institutions.")
    app.state.engine = engine
    app.state.clock = clock
    app.state.on_change = on_change

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    app.include_router(routes_jobs.router, prefix=API_PREFIX)
    app.include_router(routes_admin.router, prefix=API_PREFIX)
    for route in extra_routes or ():
        app.router.routes.append(route)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def _one_line(text: object) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else "error"


def _status_for(exc: Exception) -> int:
    from scheduler.services.errors import NotFound
    from scheduler.services.jobs import InvalidJob

    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidJob):
        return 422
    return 409


def _install_error_handlers(app: FastAPI) -> None:
    from quota import QuotaError
    from scheduler.services.errors import DomainError
    from scheduler.store import InvalidTransition

    async def domain(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=_status_for(exc))

    for cls in (DomainError, QuotaError, InvalidTransition):
        app.add_exception_handler(cls, domain)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
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
        return JSONResponse({"detail": _one_line(message) + more}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
