"""Policy settings kept in the database (Setting rows), with defaults and validation.

Keys: half_life (a duration within quota.limits.HALF_LIFE, stored in seconds),
algorithm (classic | fair-tree | finish-time), preemption (on | off), reclaim (guarantee | entitlement),
and a script attempt's limits (scheduler.runtime.sandbox): host_memory_per_slice (a size within
quota.limits.HOST_MEMORY_PER_SLICE, stored in bytes, or "node": the node's memory divided
by its slices) and max_processes (an integer within quota.limits.MAX_PROCESSES; threads
count, as the kernel's pids controller counts them).
An unknown key is NotFound (HTTP 404), a bad value Invalid or LimitError (422); nothing
is written.

algorithm finish-time is the simulator's finish-time policy (quota's "finish-time"
ordering, after Themis) through the same `quota.decide`: `PolicyConfig(ordering=
"finish-time")`, with the classic fair-share factor (which that ordering does not read).
Its work estimate per pending job is services.remaining's; it preempts
nobody (quota reclaims under the fair-share orderings only).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from quota import ALGORITHMS, CLASSIC, DEFAULT_HALF_LIFE_S, ORDERINGS, PolicyConfig, limits
from scheduler.services.errors import Invalid, NotFound
from scheduler.services.validate import human_size, parse_duration, parse_size
from scheduler.store import Setting

NODE = "node"  # host_memory_per_slice: the node's memory divided by its slices
FINISH_TIME = "finish-time"  # quota's ordering of that name (quota.snapshot.ORDERINGS)
assert FINISH_TIME in ORDERINGS
SETTING_ALGORITHMS = (*ALGORITHMS, FINISH_TIME)  # the fair-share factor's, or the finish-time ordering
DEFAULTS = {"half_life": str(DEFAULT_HALF_LIFE_S), "algorithm": "classic", "preemption": "on",
            "reclaim": "guarantee", "host_memory_per_slice": NODE, "max_processes": "4096"}


def _normalise(key: str, value: str) -> str:
    if key == "half_life":
        return repr(parse_duration(value, limits.HALF_LIFE))
    if key == "algorithm":
        if value not in SETTING_ALGORITHMS:
            raise Invalid(f"algorithm must be one of {', '.join(SETTING_ALGORITHMS)} (got {_show(value)})")
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
        config=_config(s),
        attempt=AttemptLimits(host_memory_per_slice=None if memory == NODE else int(memory),
                              max_processes=int(s["max_processes"])),
    )


def _config(s: dict[str, str]) -> PolicyConfig:
    """The policy's config from the merged settings: algorithm finish-time is the
    finish-time ordering (the simulator's "finish-time" policy exactly); any other
    algorithm is the fair-share ordering with that factor."""
    common = {"preemption": s["preemption"] == "on", "reclaim": s["reclaim"]}
    if s["algorithm"] == FINISH_TIME:
        return PolicyConfig(ordering=FINISH_TIME, algorithm=CLASSIC, **common)
    return PolicyConfig(algorithm=s["algorithm"], **common)
