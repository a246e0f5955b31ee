"""API tokens are stored only as hashes and verified in constant time."""
from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa
from sqlmodel import select

from scheduler.store import ApiToken, display_prefix, hash_token, new_token, session_scope, verify
from store_helpers import T0, make_account


def test_new_tokens_are_prefixed_random_and_distinct():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith("fg_") and len(t) >= 40 for t in tokens)


def test_hash_is_sha256_hex_and_verify():
    token = new_token()
    digest = hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest() and len(digest) == 64
    assert verify(token, digest)
    assert not verify(token + "x", digest)
    assert not verify(new_token(), digest)
    assert not verify(token, "0" * 64)


def test_raw_token_never_reaches_the_database(store):
    token = new_token()
    with session_scope(store) as s:
        account = make_account(s)
        s.add(ApiToken(account_id=account.id, name="ci", token_hash=hash_token(token),
                       prefix=display_prefix(token), created_at=T0))
        s.add(ApiToken(account_id=None, name="admin", token_hash=hash_token(new_token()), prefix="fg_admin"))
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM api_token")).fetchall()
    dumped = repr(rows)
    assert token not in dumped and token[8:] not in dumped
    assert hash_token(token) in dumped
    with session_scope(store) as s:
        found = s.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one()
        admin = s.exec(select(ApiToken).where(ApiToken.name == "admin")).one()
    assert verify(token, found.token_hash) and found.prefix == token[:8]
    assert found.created_at == T0 and admin.account_id is None


def test_token_hash_is_unique(store):
    digest = hash_token(new_token())
    with pytest.raises(sa.exc.IntegrityError), session_scope(store) as s:
        s.add(ApiToken(name="a", token_hash=digest, prefix="fg_a"))
        s.add(ApiToken(name="b", token_hash=digest, prefix="fg_b"))
