"""Per-request dependencies: one DB session (one transaction) and the bearer principal.

Invariants:
- Each request gets one session; it commits when the handler returns normally and
  rolls back on any error, before the response is sent (``scope="function"``), so
  a refused request writes nothing and a 2xx means the change is durable.
- Callbacks queued with ``after_commit`` (e.g. waking the scheduling loop) run
  only after a successful commit.
- The handlers, these dependencies and their short transactions run on the event
  loop itself, not in the thread pool. SQLite serialises writers anyway, and on
  these 2-core machines a thread hop costs more than the queries of a request
  (measured: about 1.4 ms of server CPU per submission with three hops). The
  price: a request waiting on the database lock (a writer in another process)
  holds up the others for as long.
- Every route but ``/healthz``, ``/metrics`` and the OpenAPI pages depends on
  ``principal``: a missing, unknown, revoked or expired token is 401, a scrape token
  (``/metrics`` only) is 403; ``admin`` adds 403 for institution tokens.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from scheduler.services.auth import FULL, Principal, authenticate
from scheduler.store import session_scope

_AFTER_COMMIT = "fairgpu.after_commit"


async def db_session(request: Request) -> AsyncIterator[Session]:
    with session_scope(request.app.state.engine) as session:
        yield session
    for callback in session.info.get(_AFTER_COMMIT, ()):  # only after a commit
        callback()


def after_commit(session: Session, callback: Callable[[], None] | None) -> None:
    if callback is not None:
        session.info.setdefault(_AFTER_COMMIT, []).append(callback)


SessionDep = Annotated[Session, Depends(db_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API token from `fairgpu admin token issue`.")


def now(request: Request) -> datetime:
    return request.app.state.clock()


async def principal(
    request: Request, session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None:
        raise HTTPException(401, "missing bearer token (send 'Authorization: Bearer <token>')",
                            headers={"WWW-Authenticate": "Bearer"})
    who = authenticate(session, creds.credentials, now(request))
    if who is None:
        raise HTTPException(401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if who.scope != FULL:
        raise HTTPException(403, "a scrape token can read /metrics only")
    return who


PrincipalDep = Annotated[Principal, Depends(principal)]


async def admin(who: PrincipalDep) -> Principal:
    if not who.is_admin:
        raise HTTPException(403, "this needs an admin token")
    return who


AdminDep = Annotated[Principal, Depends(admin)]
