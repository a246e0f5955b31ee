"""API tokens: generated here, stored only as a SHA-256 hex digest.

Why no slow KDF (bcrypt/argon2): a token is 32 random bytes from ``secrets``
(256 bits of entropy), not a human-chosen password. Brute-forcing a leaked
hash means searching 2**256 values, so key stretching adds nothing but
latency on every API request. This is what GitHub does for its tokens. The
hash also lets us look a token up by an indexed equality (``token_hash`` is
unique), which a salted KDF would not.

Invariants: the raw token is shown once, at creation, and never stored or
logged; comparisons are constant-time.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "fg_"
DISPLAY_PREFIX_LEN = 8


def new_token() -> str:
    """A fresh token such as ``fg_Q2x...`` (recognisable by secret scanners)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of the token, the only form that is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def display_prefix(token: str) -> str:
    """The first characters of the token, safe to show in listings (``ApiToken.prefix``)."""
    return token[:DISPLAY_PREFIX_LEN]


def verify(token: str, token_hash: str) -> bool:
    """True if ``token`` hashes to ``token_hash`` (constant-time comparison)."""
    return hmac.compare_digest(hash_token(token).encode("ascii"), token_hash.encode("ascii"))
