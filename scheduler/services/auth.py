"""API tokens: issue, revoke, list, authenticate, and the first admin token.

Invariants:
- The raw token is returned once, by ``issue_token``; only ``hash_token(raw)`` and
  an 8-character display prefix are stored.
- ``authenticate`` looks the token up by its hash (an indexed equality), then
  compares in constant time (``verify``); revoked and expired tokens are refused
  exactly like unknown ones (None). ``last_used_at`` is written at most once a
  minute per token, so reads stay reads.
- ``authenticate_many`` is ``authenticate`` for a batch of (token, time) requests
  (the group committer's): one SELECT for all their distinct hashes, the same rules
  for each request at its own time, and one UPDATE stamping ``last_used_at`` (the
  batch's latest accepted time) on the tokens due for it. ``authenticate`` is the
  batch of one, so the two cannot drift apart.
- A token with no account is an admin token (sees everything); an account's
  token acts for that account and its whole subtree (an institution's token
  covers its departments and users).
- A token's ``scope`` is "full" (the API, as above) or "scrape": a scrape token has
  no account, may read every series of /metrics and nothing else (its principal
  sees no account, and the API refuses it with 403).
- The clock is an argument everywhere.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, select

from quota import limits
from scheduler.services import validate
from scheduler.services.directory import directory
from scheduler.services.errors import DomainError, Invalid, NotFound
from scheduler.store import ApiToken, display_prefix, hash_token, new_token, verify

LAST_USED_EVERY_S = 60.0
FULL, SCRAPE = "full", "scrape"
SCOPES = (FULL, SCRAPE)
_COLUMNS = (ApiToken.id, ApiToken.account_id, ApiToken.token_hash, ApiToken.expires_at, ApiToken.revoked_at,
            ApiToken.last_used_at, ApiToken.scope)
_LOOKUP = select(*_COLUMNS).where(ApiToken.token_hash == sa.bindparam("digest"))
_LOOKUP_MANY = select(*_COLUMNS).where(ApiToken.token_hash.in_(sa.bindparam("digests", expanding=True)))
_AT = sa.bindparam("at", type_=ApiToken.__table__.c.last_used_at.type)
_TOUCH = sa.update(ApiToken).where(ApiToken.id == sa.bindparam("token_id")).values(last_used_at=_AT)
_TOUCH_MANY = (sa.update(ApiToken).where(ApiToken.id.in_(sa.bindparam("ids", expanding=True)))
               .values(last_used_at=_AT))


@dataclass(frozen=True)
class Principal:
    is_admin: bool
    account: str | None
    accounts: frozenset[str] | None  # None: every account (admin)
    scope: str = FULL

    def may_see(self, account: str) -> bool:
        return self.accounts is None or account in self.accounts

    @property
    def may_scrape(self) -> bool:
        """May read every account's series on /metrics: the admin and scrape tokens."""
        return self.is_admin or self.scope == SCRAPE


def issue_token(session: Session, *, account: str | None, name: str, expires_s: float | None, at: datetime,
                scope: str = FULL) -> str:
    """A new token for ``account`` (None: an admin token, or with ``scope="scrape"`` a
    token for /metrics only); returns the raw token, shown once."""
    if scope not in SCOPES:
        raise Invalid(f"scope must be one of {', '.join(SCOPES)} (got {scope!r})")
    if scope == SCRAPE and account is not None:
        raise Invalid("a scrape token belongs to no account (it reads every account's metrics)")
    account_id = directory(session).get(account).id if account is not None else None
    if expires_s is not None:
        limits.TOKEN_LIFETIME.check(expires_s)
    name = validate.text(name or "", "token name", validate.NAME_MAX_LEN, empty=True)
    name = name or account or ("scrape" if scope == SCRAPE else "admin")
    raw = new_token()
    session.add(ApiToken(
        account_id=account_id, name=name, token_hash=hash_token(raw), prefix=display_prefix(raw), scope=scope,
        created_at=at,
        expires_at=at + timedelta(seconds=expires_s) if expires_s is not None else None,
    ))
    session.flush()
    return raw


def token_row(session: Session, raw: str) -> ApiToken | None:
    return session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(raw))).first()


def _find(session: Session, token_id_or_prefix: str) -> ApiToken:
    key = validate.lookup_name(token_id_or_prefix, "token")
    if key.isascii() and key.isdigit():
        row = session.get(ApiToken, validate.number(limits.ID, int(key), "token id"))  # 422 past the column
        if row is None:
            raise NotFound(f"no token with id {key}")
        return row
    if len(key) > 8:  # a whole raw token: find it by its hash
        row = token_row(session, key)
        if row is None:
            raise NotFound("no such token")
        return row
    if len(key) < 4:
        raise DomainError(f"token prefix {key!r} is too short; give the id or at least 4 characters")
    rows = session.exec(select(ApiToken).where(ApiToken.prefix.startswith(key, autoescape=True))).all()
    if not rows:
        raise NotFound(f"no token with prefix {key}")
    if len(rows) > 1:
        raise DomainError(f"prefix {key} matches {len(rows)} tokens (ids {', '.join(str(r.id) for r in rows)}); "
                          "give the id")
    return rows[0]


def revoke_token(session: Session, token_id_or_prefix: str, at: datetime) -> ApiToken:
    """Revoke a token by id or display prefix. Revoking twice is refused."""
    row = _find(session, token_id_or_prefix)
    if row.revoked_at is not None:
        raise DomainError(f"token {row.id} ({row.prefix}) was already revoked at {row.revoked_at.isoformat()}")
    row.revoked_at = at
    session.add(row)
    session.flush()
    return row


def token_to_public(row: ApiToken, account_name: str | None, at: datetime | None = None) -> dict:
    state = "active"
    if row.revoked_at is not None:
        state = "revoked"
    elif at is not None and row.expires_at is not None and row.expires_at <= at:
        state = "expired"
    iso = lambda v: v.isoformat() if v is not None else None
    return {"id": row.id, "prefix": row.prefix, "name": row.name, "account": account_name,
            "admin": row.account_id is None and row.scope != SCRAPE, "scope": row.scope or FULL, "state": state,
            "created_at": iso(row.created_at),
            "expires_at": iso(row.expires_at), "revoked_at": iso(row.revoked_at),
            "last_used_at": iso(row.last_used_at)}


def list_tokens(session: Session, at: datetime | None = None) -> list[dict]:
    tree = directory(session)
    rows = session.exec(select(ApiToken).order_by(ApiToken.id)).all()
    return [token_to_public(r, tree.name_of(r.account_id) if r.account_id is not None else None, at) for r in rows]


def authenticate(session: Session, raw_token: str | None, at: datetime) -> Principal | None:
    """The principal a raw bearer token stands for, or None (unknown, revoked or expired)."""
    return authenticate_many(session, [(raw_token, at)])[0]


def authenticate_many(session: Session, requests: Sequence[tuple[str | None, datetime]]) -> list[Principal | None]:
    """``authenticate`` for each (raw token, time) of ``requests``, in order: one SELECT
    for every distinct token and at most one UPDATE (``last_used_at``) for them all."""
    digests = {raw: hash_token(raw) for raw, _ in requests if raw}
    if not digests:
        return [None] * len(requests)
    conn = session.connection()  # Core, not ORM: this runs on every API request
    if len(digests) == 1:
        rows = conn.execute(_LOOKUP, {"digest": next(iter(digests.values()))}).all()
    else:
        rows = conn.execute(_LOOKUP_MANY, {"digests": sorted(set(digests.values()))}).all()
    by_hash = {row.token_hash: row for row in rows}
    found: list[Principal | None] = []
    due: dict[int, datetime] = {}  # token id -> the latest time it was used at, when its stamp is due
    for raw, at in requests:
        row = by_hash.get(digests[raw]) if raw else None
        if row is None or not verify(raw, row.token_hash):
            found.append(None)
            continue
        if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= at):
            found.append(None)
            continue
        if row.last_used_at is None or (at - row.last_used_at).total_seconds() >= LAST_USED_EVERY_S:
            due[row.id] = max(due.get(row.id, at), at)
        found.append(_principal(session, row))
    if len(due) == 1:
        [(token_id, at)] = due.items()
        conn.execute(_TOUCH, {"token_id": token_id, "at": at})
    elif due:
        conn.execute(_TOUCH_MANY, {"ids": sorted(due), "at": max(due.values())})
    return found


def _principal(session: Session, row) -> Principal | None:
    if row.scope == SCRAPE:
        return Principal(is_admin=False, account=None, accounts=frozenset(), scope=SCRAPE)
    if row.account_id is None:
        return Principal(is_admin=True, account=None, accounts=None)
    tree = directory(session)
    entry = tree.by_id.get(row.account_id)
    if entry is None:  # the account went away (its tokens cascade; belt and braces)
        return None
    return Principal(is_admin=False, account=entry.name, accounts=tree.subtree_names(entry.name))


def ensure_admin_token(session: Session, path: Path, at: datetime) -> str | None:
    """At first start: if no usable admin token exists, issue one and write it to ``path`` (mode 0600).

    Returns the raw token when one was issued, else None. The file is written
    before the caller commits, so a failed write leaves no orphan token.
    """
    usable = session.exec(
        select(ApiToken.id).where(
            ApiToken.account_id.is_(None), ApiToken.scope == FULL, ApiToken.revoked_at.is_(None),
            sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > at),
        )
    ).first()
    if usable is not None:
        return None
    raw = issue_token(session, account=None, name="admin", expires_s=None, at=at)
    write_secret(Path(path), raw + "\n")
    return raw


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (parents created 0700)."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
