"""Account settings inherited down the tree: a job's default and maximum wall-time limit,
and whether the account may run its own code (scripts).

Invariants:
- An account's own value None means "inherit": its effective value is its own if set,
  else that of the nearest ancestor that sets it, else the built-in default (no time
  limit, scripts not allowed). As with Slurm's association limits, an own value wins
  over the inherited one, whether larger or smaller.
- ``resolve`` is pure: it walks a chain of rows (the account, then its parent, up to
  its institution) and needs no database. ``effective_settings`` reads the chain from
  the per-transaction directory (``services.directory``, no query of its own).
- Every account's effective default is at most its effective maximum: account changes
  are checked with ``check_times`` over the changed account's subtree before anything
  is written.
- A job's limit at submit (``job_time_limit``): the one asked for, refused over the
  effective maximum; else the effective default; else the effective maximum (Slurm: a
  partition's MaxTime applies when it has no DefaultTime); else none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from quota import limits
from scheduler.services import validate
from scheduler.services.errors import DomainError, Invalid

FIELDS = ("default_time_s", "max_time_s", "allow_scripts")
BUILT_IN = {"default_time_s": None, "max_time_s": None, "allow_scripts": False}


class Row(Protocol):
    """An account's own settings (a directory entry, an ORM row or ``Own``)."""

    name: str
    default_time_s: float | None
    max_time_s: float | None
    allow_scripts: bool | None


@dataclass(frozen=True)
class Own:
    name: str
    parent: str | None
    default_time_s: float | None = None
    max_time_s: float | None = None
    allow_scripts: bool | None = None


@dataclass(frozen=True)
class EffectiveSettings:
    """The values in force for an account, and the account each comes from (None: built in)."""

    default_time_s: float | None
    max_time_s: float | None
    allow_scripts: bool
    default_time_from: str | None = None
    max_time_from: str | None = None
    allow_scripts_from: str | None = None


def resolve(chain: Iterable[Row]) -> EffectiveSettings:
    """The effective settings of ``chain[0]``, given it and its ancestors, nearest first."""
    values, sources = dict(BUILT_IN), dict.fromkeys(FIELDS)
    for row in chain:
        for field in FIELDS:
            own = getattr(row, field)
            if sources[field] is None and own is not None:
                values[field], sources[field] = own, row.name
    return EffectiveSettings(**values, default_time_from=sources["default_time_s"],
                             max_time_from=sources["max_time_s"], allow_scripts_from=sources["allow_scripts"])


def chain_of(rows: Mapping[str, Own], name: str) -> list[Own]:
    """``name``'s row, then its parent's, up to its institution (a cycle ends the walk)."""
    out, seen, cur = [], set(), name
    while cur is not None and cur not in seen and cur in rows:
        seen.add(cur)
        out.append(rows[cur])
        cur = rows[cur].parent
    return out


def effective_settings(session, account_name: str) -> EffectiveSettings:
    """The settings in force for ``account_name`` (NotFound if there is no such account)."""
    from scheduler.services.directory import directory

    validate.lookup_name(account_name)
    tree = directory(session)
    return resolve(tree.ancestors(tree.get(account_name)))


def check_own(name: str, default_time_s, max_time_s, allow_scripts) -> None:
    """An account's own values, each None or within its range (LimitError, Invalid)."""
    for field, value in (("default_time_s", default_time_s), ("max_time_s", max_time_s)):
        try:
            validate.optional(limits.TIME_LIMIT, value, field)
        except limits.LimitError as exc:
            raise limits.LimitError(f"account {name}: {exc}") from None
    if allow_scripts is not None and not isinstance(allow_scripts, bool):
        raise Invalid(f"account {name}: allow_scripts must be true, false or null (got {allow_scripts!r})")


def check_times(rows: Mapping[str, Own], changed: str) -> None:
    """Refuse (DomainError) if, with ``rows`` as they would be, ``changed`` or any account
    under it has an effective default time over its effective maximum."""
    children: dict[str | None, list[str]] = {}
    for row in rows.values():
        children.setdefault(row.parent, []).append(row.name)
    stack = [changed]
    while stack:
        name = stack.pop()
        eff = resolve(chain_of(rows, name))
        if eff.default_time_s is not None and eff.max_time_s is not None and eff.default_time_s > eff.max_time_s:
            raise DomainError(
                f"account {name}: default time {_show(eff.default_time_s)}{_inherited(eff.default_time_from, name)} "
                f"exceeds {'its' if eff.max_time_from == name else 'the'} maximum of {_show(eff.max_time_s)}"
                f"{_inherited(eff.max_time_from, name)}")
        stack.extend(sorted(children.get(name, ()), reverse=True))


def job_time_limit(eff: EffectiveSettings, asked: float | None, account: str) -> float | None:
    """The wall-time limit a job submitted to ``account`` gets (see the module invariants);
    ``asked`` is range-checked (LimitError) and refused over the maximum (Invalid)."""
    if asked is None:
        return eff.default_time_s if eff.default_time_s is not None else eff.max_time_s
    validate.number(limits.TIME_LIMIT, asked, "time_limit_s")
    if eff.max_time_s is not None and asked > eff.max_time_s:
        raise Invalid(f"time limit {_show(asked)} exceeds the maximum of {_show(eff.max_time_s)} "
                      f"for account {account}")
    return float(asked)


def _inherited(source: str | None, name: str) -> str:
    return "" if source == name else f" inherited from {source}"


def _show(seconds: float) -> str:
    return validate.human_duration(seconds)


def describe(eff: EffectiveSettings) -> dict[str, object]:
    """The effective values and where they come from, for listings (JSON-ready)."""
    return {"default_time_s": eff.default_time_s, "max_time_s": eff.max_time_s, "allow_scripts": eff.allow_scripts,
            "from": {"default_time_s": eff.default_time_from, "max_time_s": eff.max_time_from,
                     "allow_scripts": eff.allow_scripts_from}}


__all__ = ["EffectiveSettings", "Own", "resolve", "chain_of", "effective_settings", "check_own", "check_times",
           "job_time_limit", "describe", "FIELDS", "BUILT_IN"]
