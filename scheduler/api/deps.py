"""Per-request dependencies: one DB session (one transaction) and the bearer principal.

Invariants:
- Each request gets one session; it commits when the handler returns normally and
  rolls back on any error, before the response is sent (``scope="function"``), so
  a refused request writes nothing and a 2xx means the change is durable.
- Callbacks queued with ``after_commit`` (e.g. waking the scheduling loop) run
  only after a successful commit.
- Submissions (``POST /v1/jobs``) never touch the database on the event loop: the
  handler hands its work (``authorize`` included) to the app's group committer
  (``services.committer``). The other handlers, these dependencies and their
  short transactions run on the event loop itself, not in the thread pool (a thread
  hop costs more than their queries; docs/benchmarks.md). The price: such a request
  waiting on the database holds up the others for as long.
- Every route but ``/healthz``, ``/metrics`` and the OpenAPI pages depends on
  ``principal`` (submissions: ``bearer``, then ``authorize`` in their transaction; a
  committer batch authenticates all its tokens at once first, ``authorize_batch``;
  uploads: ``bearer``, then ``authorize`` in a short transaction closed before the body):
  a missing, unknown, revoked or expired token is 401, a scrape token (``/metrics``
  only) is 403; ``admin`` adds 403 for institution tokens.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from scheduler.services.auth import FULL, Principal, authenticate, authenticate_many
from scheduler.store import session_scope

_AFTER_COMMIT = "fairgpu.after_commit"
_PRINCIPALS = "fairgpu.principals"  # (raw token, time) -> Principal | None, found by authorize_batch


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
    """The app's injected clock (``create_app(clock=...)``; the server hands it
    ``store.utcnow``): the way every route reads the time, so tests can fix it."""
    return request.app.state.clock()


async def bearer(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The raw bearer token (not yet checked: ``authorize`` does that); 401 when there is none."""
    if creds is None:
        raise HTTPException(401, "missing bearer token (send 'Authorization: Bearer <token>')",
                            headers={"WWW-Authenticate": "Bearer"})
    return creds.credentials


BearerDep = Annotated[str, Depends(bearer)]


def authorize_batch(session: Session, keys: list[tuple[str, datetime]]) -> None:
    """Authenticate a committer batch's (token, time) pairs in one query (``authenticate_many``)
    and leave the principals where ``authorize`` looks first, for this transaction."""
    session.info.setdefault(_PRINCIPALS, {}).update(zip(keys, authenticate_many(session, keys), strict=True))


def authorize(session: Session, token: str, at: datetime) -> Principal:
    """The principal of a full-scope token, in this transaction; 401 or 403 otherwise."""
    found = session.info.get(_PRINCIPALS)
    who = found[token, at] if found is not None and (token, at) in found else authenticate(session, token, at)
    if who is None:
        raise HTTPException(401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if who.scope != FULL:
        raise HTTPException(403, "a scrape token can read /metrics only")
    return who


async def principal(request: Request, session: SessionDep, token: BearerDep) -> Principal:
    return authorize(session, token, now(request))


PrincipalDep = Annotated[Principal, Depends(principal)]


async def admin(who: PrincipalDep) -> Principal:
    if not who.is_admin:
        raise HTTPException(403, "this needs an admin token")
    return who


AdminDep = Annotated[Principal, Depends(admin)]
