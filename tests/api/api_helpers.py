"""Builders for the API tests: a seeded fairgpu, capacity, a small account tree, and one token per role.

Tree: uni-a (institution) with leaves uni-a/vision (max 3 pending) and uni-a/nlp,
and uni-b (an institution that is itself a leaf). One node of 2 T4 GPUs x 4 slices.
Roles: admin, a (uni-a), a_vision (uni-a/vision), b (uni-b), revoked, expired.
The clock is a ``FakeClock`` the test moves by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
TABLES = ("account", "node", "job", "job_event", "usage_record", "api_token", "setting")


class FakeClock:
    def __init__(self, at: datetime = T0):
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@dataclass
class Seeded:
    engine: object
    clock: FakeClock
    tokens: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def seed(engine, clock: FakeClock) -> Seeded:
    from scheduler.services import accounts, auth, capacity
    from scheduler.store import session_scope

    out = Seeded(engine, clock)
    at = clock()
    with session_scope(engine) as s:
        capacity.set_node(s, node="n1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=at)
        accounts.add_account(s, "uni-a", weight=2)
        accounts.add_account(s, "uni-a/vision", weight=1, parent="uni-a", max_pending=3)
        accounts.add_account(s, "uni-a/nlp", weight=1, parent="uni-a")
        accounts.add_account(s, "uni-b", weight=1)
    with session_scope(engine) as s:
        out.tokens["admin"] = auth.issue_token(s, account=None, name="admin", expires_s=None, at=at)
        out.tokens["a"] = auth.issue_token(s, account="uni-a", name="a", expires_s=None, at=at)
        out.tokens["a_vision"] = auth.issue_token(s, account="uni-a/vision", name="v", expires_s=None, at=at)
        out.tokens["b"] = auth.issue_token(s, account="uni-b", name="b", expires_s=None, at=at)
        out.tokens["revoked"] = auth.issue_token(s, account="uni-a", name="old", expires_s=None, at=at)
        out.tokens["expired"] = auth.issue_token(s, account="uni-a", name="short", expires_s=60,
                                                 at=at - timedelta(hours=1))
    with session_scope(engine) as s:
        auth.revoke_token(s, out.tokens["revoked"], at)
    return out


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}
