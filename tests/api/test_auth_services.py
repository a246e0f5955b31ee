"""Token services on SQLite and PostgreSQL: hashed storage, expiry, revocation, subtrees."""
from __future__ import annotations

import os
import stat
from datetime import timedelta

import pytest
import sqlalchemy as sa
from api_helpers import T0

from scheduler.services import auth
from scheduler.services.errors import DomainError, NotFound
from scheduler.store import hash_token, session_scope


def test_only_the_hash_is_stored(seeded):
    with seeded.engine.connect() as conn:
        dump = repr(conn.execute(sa.text("SELECT * FROM api_token")).all())
    for raw in seeded.tokens.values():
        assert raw not in dump
        assert hash_token(raw) in dump


def test_principals_cover_their_subtree(seeded):
    with session_scope(seeded.engine) as s:
        admin = auth.authenticate(s, seeded.tokens["admin"], T0)
        a = auth.authenticate(s, seeded.tokens["a"], T0)
        vision = auth.authenticate(s, seeded.tokens["a_vision"], T0)
    assert admin == auth.Principal(is_admin=True, account=None, accounts=None)
    assert a.accounts == {"uni-a", "uni-a/vision", "uni-a/nlp"} and not a.is_admin
    assert vision.accounts == {"uni-a/vision"} and vision.account == "uni-a/vision"


def test_revoked_expired_and_unknown_tokens_are_refused(seeded):
    with session_scope(seeded.engine) as s:
        for token in (seeded.tokens["revoked"], seeded.tokens["expired"], "fg_not-a-real-token", "", None):
            assert auth.authenticate(s, token, T0) is None, token


def test_a_token_expires_at_its_time(seeded):
    with session_scope(seeded.engine) as s:
        raw = auth.issue_token(s, account="uni-b", name="day", expires_s=86400, at=T0)
    with session_scope(seeded.engine) as s:
        assert auth.authenticate(s, raw, T0 + timedelta(hours=23)) is not None
        assert auth.authenticate(s, raw, T0 + timedelta(hours=24)) is None


def test_last_used_is_written_at_most_once_a_minute(seeded):
    raw = seeded.tokens["b"]

    def last_used():
        with session_scope(seeded.engine) as s:
            return auth.token_row(s, raw).last_used_at

    for offset, expected in [(0, T0), (30, T0), (61, T0 + timedelta(seconds=61))]:
        with session_scope(seeded.engine) as s:
            auth.authenticate(s, raw, T0 + timedelta(seconds=offset))
        assert last_used() == expected


def test_revoke_by_id_prefix_or_raw_token(seeded):
    with session_scope(seeded.engine) as s:
        rows = {r["name"]: r for r in auth.list_tokens(s, T0)}
    assert rows["old"]["state"] == "revoked" and rows["short"]["state"] == "expired" and rows["b"]["state"] == "active"
    with session_scope(seeded.engine) as s:
        auth.revoke_token(s, rows["b"]["prefix"], T0)
        auth.revoke_token(s, str(rows["v"]["id"]), T0)
        auth.revoke_token(s, seeded.tokens["a"], T0)
    with session_scope(seeded.engine) as s:
        for name in ("b", "a_vision", "a"):
            assert auth.authenticate(s, seeded.tokens[name], T0) is None
        assert auth.authenticate(s, seeded.tokens["admin"], T0) is not None
    for key, error in [(str(rows["b"]["id"]), DomainError), ("999", NotFound), ("fg_zzzzz", NotFound),
                       ("fg", DomainError)]:
        with pytest.raises(error), session_scope(seeded.engine) as s:
            auth.revoke_token(s, key, T0)


def test_issue_refuses_unknown_accounts_and_past_expiry(seeded):
    before = seeded.counts()
    from quota.limits import LimitError

    for kwargs, error in [({"account": "nope", "expires_s": None}, NotFound),
                          ({"account": "uni-b", "expires_s": 0}, LimitError),  # quota.limits.TOKEN_LIFETIME
                          ({"account": "uni-b", "expires_s": float("inf")}, LimitError),
                          ({"account": "uni-b", "expires_s": None, "name": "bad\x00name"}, DomainError)]:
        with pytest.raises(error), session_scope(seeded.engine) as s:
            auth.issue_token(s, **{"name": "x", "at": T0, **kwargs})
    assert seeded.counts() == before


def test_admin_token_file_is_written_once_and_private(db_engine, tmp_path):
    path = tmp_path / "state" / "fairgpu" / "admin-token"
    with session_scope(db_engine) as s:
        raw = auth.ensure_admin_token(s, path, T0)
    assert raw and path.read_text().strip() == raw
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    with session_scope(db_engine) as s:
        assert auth.ensure_admin_token(s, path, T0) is None
        assert auth.authenticate(s, raw, T0).is_admin
    with session_scope(db_engine) as s:  # revoked: the next start issues a new one
        auth.revoke_token(s, raw, T0)
    with session_scope(db_engine) as s:
        again = auth.ensure_admin_token(s, path, T0)
    assert again and again != raw and path.read_text().strip() == again


def _token_statements(engine, run) -> list[str]:
    """The statements on api_token that ``run()`` sends, lower-cased."""
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statement = " ".join(statement.split()).lower()
        if "api_token" in statement:
            statements.append(statement.split()[0])

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    return statements


def test_authenticate_many_answers_each_request_as_authenticate_would(seeded):
    t = seeded.tokens
    raws = [t["admin"], t["a"], t["revoked"], t["a_vision"], t["expired"], "fg_not-a-real-token", "", None, t["a"]]
    with session_scope(seeded.engine) as s:
        singles = [auth.authenticate(s, raw, T0) for raw in raws]
    with session_scope(seeded.engine) as s:
        found: list = []
        statements = _token_statements(seeded.engine, lambda: found.extend(
            auth.authenticate_many(s, [(raw, T0) for raw in raws])))
    assert found == singles
    assert [p is not None for p in found] == [True, True, False, True, False, False, False, False, True]
    assert found[1].accounts == {"uni-a", "uni-a/vision", "uni-a/nlp"}
    assert statements == ["select"]  # one query for every token; all were stamped at T0 already (by `singles`)
    with session_scope(seeded.engine) as s:
        assert auth.authenticate_many(s, []) == []
        assert auth.authenticate_many(s, [(None, T0), ("", T0)]) == [None, None]


def test_authenticate_many_checks_expiry_at_each_request_s_own_time(seeded):
    with session_scope(seeded.engine) as s:
        raw = auth.issue_token(s, account="uni-b", name="day", expires_s=86400, at=T0)
    with session_scope(seeded.engine) as s:
        early, late = auth.authenticate_many(s, [(raw, T0 + timedelta(hours=23)), (raw, T0 + timedelta(hours=24))])
    assert early is not None and early.account == "uni-b" and late is None
    with session_scope(seeded.engine) as s:
        assert auth.token_row(s, raw).last_used_at == T0 + timedelta(hours=23)  # the accepted use only


def test_authenticate_many_stamps_last_use_once_a_batch_and_once_a_minute(seeded):
    with session_scope(seeded.engine) as s:
        scrape = auth.issue_token(s, account=None, name="prom", expires_s=None, at=T0, scope=auth.SCRAPE)
    used = [seeded.tokens["a"], seeded.tokens["b"], scrape, seeded.tokens["revoked"]]
    at = T0 + timedelta(seconds=10)

    def batch(at):
        with session_scope(seeded.engine) as s:
            return auth.authenticate_many(s, [(raw, at) for raw in used + used])

    found: list = []
    assert _token_statements(seeded.engine, lambda: found.extend(batch(at))) == ["select", "update"]
    assert found[2] == auth.Principal(is_admin=False, account=None, accounts=frozenset(), scope=auth.SCRAPE)
    with session_scope(seeded.engine) as s:
        assert [auth.token_row(s, raw).last_used_at for raw in used] == [at, at, at, None]
    assert _token_statements(seeded.engine, lambda: batch(at + timedelta(seconds=30))) == ["select"]
    later = at + timedelta(seconds=61)
    assert _token_statements(seeded.engine, lambda: batch(later)) == ["select", "update"]
    with session_scope(seeded.engine) as s:
        assert [auth.token_row(s, raw).last_used_at for raw in used] == [later, later, later, None]
