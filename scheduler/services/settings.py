"""Policy settings kept in the database (Setting rows), with defaults and validation.

Keys: half_life (a duration within quota.limits.HALF_LIFE, stored in seconds),
algorithm (classic | fair-tree), preemption (on | off), reclaim (guarantee | entitlement).
An unknown key is NotFound (HTTP 404), a bad value Invalid (422); nothing is written.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from quota import ALGORITHMS, DEFAULT_HALF_LIFE_S, PolicyConfig, limits
from scheduler.services.errors import Invalid, NotFound
from scheduler.services.validate import parse_duration
from scheduler.store import Setting

DEFAULTS = {"half_life": str(DEFAULT_HALF_LIFE_S), "algorithm": "classic", "preemption": "on",
            "reclaim": "guarantee"}


def _normalise(key: str, value: str) -> str:
    if key == "half_life":
        return repr(parse_duration(value, limits.HALF_LIFE))
    if key == "algorithm":
        if value not in ALGORITHMS:
            raise Invalid(f"algorithm must be one of {', '.join(ALGORITHMS)} (got {value!r})")
        return value
    if key == "preemption":
        if value not in ("on", "off"):
            raise Invalid(f"preemption must be on or off (got {value!r})")
        return value
    if key == "reclaim":
        if value not in ("guarantee", "entitlement"):
            raise Invalid(f"reclaim must be guarantee or entitlement (got {value!r})")
        return value
    raise NotFound(f"unknown setting {key!r} (known: {', '.join(DEFAULTS)})")


def set_setting(session: Session, key: str, value: str) -> str:
    norm = _normalise(key, value)
    row = session.get(Setting, key) or Setting(key=key, value=norm)
    row.value = norm
    session.add(row)
    session.flush()
    return norm


def all_settings(session: Session) -> dict[str, str]:
    out = dict(DEFAULTS)
    t = Setting.__table__.c
    for key, value in session.connection().execute(sa.select(t.key, t.value)).all():
        if key in DEFAULTS:
            out[key] = value
    return out


@dataclass(frozen=True)
class PolicySettings:
    half_life_s: float
    config: PolicyConfig


def policy_settings(session: Session) -> PolicySettings:
    s = all_settings(session)
    return PolicySettings(
        half_life_s=float(s["half_life"]),
        config=PolicyConfig(algorithm=s["algorithm"], preemption=s["preemption"] == "on", reclaim=s["reclaim"]),
    )
