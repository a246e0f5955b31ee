"""Policy settings kept in the database (Setting rows), with defaults and validation.

Keys: half_life (a duration within quota.limits.HALF_LIFE, stored in seconds),
algorithm (classic | fair-tree), preemption (on | off), reclaim (guarantee | entitlement),
and a script attempt's limits (scheduler.runtime.sandbox): host_memory_per_slice (a size within
quota.limits.HOST_MEMORY_PER_SLICE, stored in bytes, or "node": the node's memory divided
by its slices) and max_processes (an integer within quota.limits.MAX_PROCESSES; threads
count, as the kernel's pids controller counts them).
An unknown key is NotFound (HTTP 404), a bad value Invalid or LimitError (422); nothing
is written.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from quota import ALGORITHMS, DEFAULT_HALF_LIFE_S, PolicyConfig, limits
from scheduler.services.errors import Invalid, NotFound
from scheduler.services.validate import human_size, parse_duration, parse_size
from scheduler.store import Setting

NODE = "node"  # host_memory_per_slice: the node's memory divided by its slices
DEFAULTS = {"half_life": str(DEFAULT_HALF_LIFE_S), "algorithm": "classic", "preemption": "on",
            "reclaim": "guarantee", "host_memory_per_slice": NODE, "max_processes": "4096"}


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
    if key == "host_memory_per_slice":
        if value == NODE:
            return value
        return str(parse_size(value, limits.HOST_MEMORY_PER_SLICE, other=NODE))
    if key == "max_processes":
        rng = limits.MAX_PROCESSES
        if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12):
            raise Invalid(f"max_processes must be {rng.describe()} (got {_show(value)})")
        return str(rng.check(int(value)))
    raise NotFound(f"unknown setting {key!r} (known: {', '.join(DEFAULTS)})")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def show(key: str, value: str) -> str:
    """A stored value as a person reads it: host_memory_per_slice in its largest exact
    binary unit ('8GiB'); every other value as stored."""
    if key == "host_memory_per_slice" and value != NODE:
        return human_size(int(value))
    return value


def set_setting(session: Session, key: str, value: str) -> str:
    norm = _normalise(key, value)
    row = session.get(Setting, key) or Setting(key=key, value=norm)
    row.value = norm
    session.add(row)
    session.flush()
    return norm


def all_settings(session: Session) -> dict[str, str]:
    return _merged(_rows(session))


def _rows(session: Session) -> list[tuple[str, str]]:
    t = Setting.__table__.c
    return session.connection().execute(sa.select(t.key, t.value)).all()


def _merged(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """DEFAULTS, overridden by the stored (key, value) rows of known keys."""
    out = dict(DEFAULTS)
    for key, value in rows:
        if key in DEFAULTS:
            out[key] = value
    return out


@dataclass(frozen=True)
class AttemptLimits:
    """A script attempt's limits, as its TaskPayload carries them (scheduler.runtime.tasks)."""

    host_memory_per_slice: int | None = None  # bytes per slice; None: the node's memory / its slices
    max_processes: int | None = None


@dataclass(frozen=True)
class PolicySettings:
    half_life_s: float
    config: PolicyConfig
    attempt: AttemptLimits = AttemptLimits()


def policy_settings(session: Session) -> PolicySettings:
    return policy_from_rows(_rows(session))


def policy_from_rows(rows: Iterable[tuple[str, str]]) -> PolicySettings:
    """The policy's settings from the setting table's (key, value) rows, as read by the
    caller (the loop's loader reads them once a cycle, and builds from them only when
    they changed)."""
    s = _merged(rows)
    memory = s["host_memory_per_slice"]
    return PolicySettings(
        half_life_s=float(s["half_life"]),
        config=PolicyConfig(algorithm=s["algorithm"], preemption=s["preemption"] == "on", reclaim=s["reclaim"]),
        attempt=AttemptLimits(host_memory_per_slice=None if memory == NODE else int(memory),
                              max_processes=int(s["max_processes"])),
    )
