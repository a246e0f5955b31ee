"""Policy settings kept in the database (Setting rows), with defaults and validation.

Keys: half_life (seconds), algorithm (classic | fair-tree), preemption (on | off),
reclaim (guarantee | entitlement). Unknown keys and bad values are refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from quota import ALGORITHMS, DEFAULT_HALF_LIFE_S, PolicyConfig
from scheduler.services.errors import DomainError
from scheduler.store import Setting

DEFAULTS = {"half_life": str(DEFAULT_HALF_LIFE_S), "algorithm": "classic", "preemption": "on",
            "reclaim": "guarantee"}

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'7d', '36h', '90m', '3600' or '3600s' -> seconds (> 0)."""
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:]) if t and not t[-1].isdigit() else 1
    number = t[:-1] if t and not t[-1].isdigit() else t
    try:
        value = float(number) * unit
    except ValueError:
        raise DomainError(f"cannot read duration {text!r} (use e.g. 7d, 36h, 90m or seconds)") from None
    if not value > 0:
        raise DomainError(f"duration must be > 0 (got {text!r})")
    return value


def _normalise(key: str, value: str) -> str:
    if key == "half_life":
        return repr(parse_duration(value))
    if key == "algorithm":
        if value not in ALGORITHMS:
            raise DomainError(f"algorithm must be one of {', '.join(ALGORITHMS)} (got {value!r})")
        return value
    if key == "preemption":
        if value not in ("on", "off"):
            raise DomainError(f"preemption must be on or off (got {value!r})")
        return value
    if key == "reclaim":
        if value not in ("guarantee", "entitlement"):
            raise DomainError(f"reclaim must be guarantee or entitlement (got {value!r})")
        return value
    raise DomainError(f"unknown setting {key!r} (known: {', '.join(DEFAULTS)})")


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
