"""The one validation layer: every name, number and duration a caller sends, checked
before anything is written. The CLI and the API both go through the services, which
call these functions; the ranges themselves live in ``quota.limits``, never here.

Invariants:
- A value is accepted as given or refused; nothing is stripped, rounded or clamped.
- A refusal raises ``Invalid`` (a malformed name or duration) or ``quota.limits.LimitError``
  (a number outside its range); both map to HTTP 422 and exit 1 (``services.errors``).
  The message is one line that names the field and what is allowed.
- Whatever passes fits every column on SQLite and PostgreSQL alike: integers within
  32 bits, strings without NUL or other control characters.

Account names (docs/admin.md, "Names"): '/'-separated segments, each matching
``quota.limits.NAME_SEGMENT_PATTERN`` (lowercase letters, digits, and ``. _ -`` inside),
at most ``NAME_MAX_LEN`` characters in all. A top-level account's name is one segment.
A sub-account's name is either one segment, or its parent's name, '/', one segment
(``uni-north/vision`` under ``uni-north``): a name with '/' spells its place in the tree.

Durations: ``parse_duration`` takes a number with a unit or plain seconds;
``parse_time_limit`` takes Slurm's ``--time`` forms, where a bare number is minutes,
and hands the unit forms to ``parse_duration`` (docs/institutions.md, "Time limits").

Sizes: ``parse_size`` takes a number with a binary unit (``K``, ``M``, ``G``, ``T``, or
``KiB``, ``MiB``, ``GiB``, ``TiB``: powers of 1024, as Slurm's ``--mem``) or plain bytes,
and returns a whole number of bytes; ``GB`` and other decimal units are refused rather
than guessed.

Moments: ``parse_when`` takes ``YYYY-MM-DD`` (midnight UTC) or
``YYYY-MM-DDTHH:MM[:SS[.ffffff]]`` with ``Z`` or ``+HH:MM``/``-HH:MM`` (UTC without one),
and returns an aware UTC datetime no earlier than ``EPOCH``; week dates, ordinal dates,
compact forms and hours alone are refused.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime
from fractions import Fraction

from quota import limits
from quota.limits import (
    ID,
    NAME_MAX_LEN,
    NAME_SEGMENT_PATTERN,
    NAME_SEGMENT_RULE,
    Range,
)
from scheduler.services.errors import Invalid

__all__ = [
    "DURATION_MAX_LEN",
    "EPOCH",
    "ID",
    "JOB_NUMBERS",
    "NAME_MAX_LEN",
    "TIME_LIMIT_FORMS",
    "account_name",
    "account_place",
    "describe_duration",
    "describe_size",
    "human_duration",
    "human_size",
    "job_numbers",
    "limits",
    "lookup_name",
    "number",
    "optional",
    "parse_duration",
    "parse_size",
    "parse_time_limit",
    "parse_when",
    "text",
]

_SEGMENT = re.compile(NAME_SEGMENT_PATTERN)
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DURATION_MAX_LEN = 32  # characters: far more than any duration in range needs
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(|B|K|M|G|T|KiB|MiB|GiB|TiB)")
_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
               "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
SIZE_FORMS = "a size such as 8GiB, 512MiB or 2G (K, M, G, T: powers of 1024), or plain bytes"
# Slurm's --time forms: [D-]... where a bare number is minutes; minutes and seconds after
# a ':' are two digits, hours after 'D-' one or two.
_SLURM_TIME = re.compile(r"(?:(?P<d>[0-9]+)-(?P<dh>[0-9]{1,2})(?::(?P<dm>[0-9]{2})(?::(?P<ds>[0-9]{2}))?)?"
                         r"|(?P<a>[0-9]+)(?::(?P<b>[0-9]{2})(?::(?P<c>[0-9]{2}))?)?)")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the earliest moment parse_when accepts
_WHEN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
                   r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?)?")
TIME_LIMIT_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (a bare number is minutes), or 90s, 10m, 2h, 3d"

# The numbers of a job submission, by the name the API and the CLI give them.
JOB_NUMBERS = {"slices": limits.JOB_SLICES, "count": limits.JOB_COUNT, "seconds": limits.HOLD_SECONDS,
               "steps": limits.STEPS, "batch_size": limits.BATCH_SIZE, "image_size": limits.IMAGE_SIZE}


def number(rng: Range, value: object, field: str | None = None):
    """``value`` if it lies in ``rng`` (see ``Range.check``); else LimitError."""
    return rng.check(value, field)


def optional(rng: Range, value: object, field: str | None = None):
    """``number`` for a value that may be absent (None passes as None)."""
    return None if value is None else rng.check(value, field)


def job_numbers(values: dict) -> None:
    """Each number of a submission that is present (not None) within its range."""
    for key, rng in JOB_NUMBERS.items():
        optional(rng, values.get(key))


def parse_duration(text: str, rng: Range) -> float:
    """'90s', '10m', '2h', '7d', '1w' or plain seconds ('3600', '1.5h') -> seconds within ``rng``.

    Strict: no sign, no spaces, no exponent, lowercase units only; NaN, infinities and
    overflowing counts are refused with the range.
    """
    field = rng.field
    match = _DURATION.fullmatch(text) if isinstance(text, str) and len(text) <= DURATION_MAX_LEN else None
    if match is None:
        raise Invalid(f"{field} must be a duration such as 90s, 10m, 2h or 7d, or plain seconds "
                      f"(got {_show(text)})")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds not in rng:
        raise Invalid(f"{field} must be {describe_duration(rng)} (got {text})")
    return seconds


def parse_size(text: str, rng: Range, other: str = "") -> int:
    """'8GiB', '512MiB', '2G', '1.5GiB' or plain bytes ('67108864') -> bytes within ``rng``.

    Strict: no sign, no spaces, no exponent; units are binary and case-sensitive. A value
    that is not a whole number of bytes ('1.0000001K') is refused, not rounded. ``other``
    names what else the caller accepts, for the message ('node').
    """
    field = rng.field
    match = _SIZE.fullmatch(text) if isinstance(text, str) and len(text) <= DURATION_MAX_LEN else None
    if match is None:
        raise Invalid(f"{field} must be {SIZE_FORMS}{f', or {other}' if other else ''} (got {_show(text)})")
    size = Fraction(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size.denominator != 1:
        raise Invalid(f"{field} must be a whole number of bytes (got {text})")
    if size not in rng:
        raise Invalid(f"{field} must be {describe_size(rng)} (got {text})")
    return int(size)


def human_size(n: int) -> str:
    """'8GiB', '1536MiB', '67108865': bytes in the largest binary unit that states them exactly."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        size = _SIZE_UNITS[unit]
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def describe_size(rng: Range) -> str:
    """'64MiB to 64TiB': a size range in the largest units that state it exactly."""
    return f"{human_size(int(rng.low))} to {human_size(int(rng.high))}"


def parse_time_limit(text: str, field: str = limits.TIME_LIMIT.field) -> float:
    """A wall-time limit in Slurm's ``--time`` forms (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``: a bare number is minutes) or with a unit (``90s``, ``10m``,
    ``2h``, ``3d``, as ``parse_duration``) -> seconds within ``quota.limits.TIME_LIMIT``.

    Strict: digits only, minutes and seconds after a ':' are two digits below 60, hours
    after 'D-' below 24; no sign, no spaces, no 'UNLIMITED' (leave the limit out instead).
    """
    rng = replace(limits.TIME_LIMIT, field=field)
    ok = isinstance(text, str) and len(text) <= DURATION_MAX_LEN
    match = _SLURM_TIME.fullmatch(text) if ok else None
    if match is None:
        unit = _DURATION.fullmatch(text) if ok else None
        if unit is not None and unit.group(2):
            return parse_duration(text, rng)
        raise Invalid(f"{field} must be {TIME_LIMIT_FORMS} (got {_show(text)})")
    p = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if "d" in p:  # D-HH[:MM[:SS]]
        days, hours, minutes, secs, after_colon = p["d"], p["dh"], p.get("dm", 0), p.get("ds", 0), (p.get("dm", 0),)
        if hours > 23:
            raise Invalid(f"{field} {text!r}: the hours after 'D-' must be 0 to 23")
    elif "c" in p:  # HH:MM:SS
        days, hours, minutes, secs, after_colon = 0, p["a"], p["b"], p["c"], (p["b"],)
    else:  # MM[:SS]: the leading minutes have no bound
        days, hours, minutes, secs, after_colon = 0, 0, p["a"], p.get("b", 0), ()
    if max((*after_colon, secs)) > 59:
        raise Invalid(f"{field} {text!r}: minutes and seconds after a ':' must be 00 to 59")
    seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
    if seconds not in rng:
        raise Invalid(f"{field} must be {describe_duration(rng)} (got {text})")
    return seconds


def parse_when(text: str, field: str) -> datetime:
    """A date (``2026-11-01``: midnight UTC) or an ISO 8601 time (``2026-11-01T09:30Z``;
    UTC without a zone) -> an aware UTC datetime, ``EPOCH`` or later (see the module
    docstring for the forms)."""
    value = None
    if isinstance(text, str) and _WHEN.fullmatch(text):
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except (ValueError, OverflowError):  # a day or hour that does not exist, or past year 9999
            value = None
    if value is None:
        raise Invalid(f"{field} must be a date (YYYY-MM-DD) or an ISO 8601 time (got {_show(text)})")
    if value < EPOCH:
        raise Invalid(f"{field} must be 1970-01-01 or later (got {text})")
    return value


def human_duration(seconds: float) -> str:
    """'2h', '90m', '3725s': seconds in the largest unit that states them exactly."""
    return _human(seconds)


def describe_duration(rng: Range) -> str:
    """'1m to 3650d': a duration range in the largest units that state it exactly."""
    return f"{_human(rng.low)} to {_human(rng.high)}"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and float(seconds / size).is_integer():
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def text(value: object, field: str, max_len: int = NAME_MAX_LEN, *, empty: bool = False) -> str:
    """A free-form label (token name, GPU type, node name): printable, no surrounding
    whitespace, at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise Invalid(f"{field} must be text (got {_show(value)})")
    if not value and empty:
        return value
    if not value:
        raise Invalid(f"{field} must not be empty")
    if len(value) > max_len:
        raise Invalid(f"{field} must be at most {max_len} characters (got {len(value)})")
    if not value.isprintable():
        raise Invalid(f"{field} must not contain control characters or NUL (got {_show(value)})")
    if value != value.strip():
        raise Invalid(f"{field} must not start or end with whitespace (got {_show(value)})")
    return value


def account_name(name: object, field: str = "account name") -> str:
    """A well-formed account name (see the module docstring), returned unchanged."""
    if not isinstance(name, str) or not name:
        raise Invalid(f"{field} must not be empty")
    if len(name) > NAME_MAX_LEN:
        raise Invalid(f"{field} must be at most {NAME_MAX_LEN} characters (got {len(name)})")
    if not name.isprintable() or name != name.strip():
        raise Invalid(f"{field} must not contain control characters or surrounding whitespace (got {_show(name)})")
    if ".." in name:
        raise Invalid(f"{field} must not contain '..' (got {_show(name)})")
    for segment in name.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise Invalid(f"{field} {_show(name)}: each '/'-separated part must be {NAME_SEGMENT_RULE}")
    return name


def account_place(name: str, parent: str | None) -> None:
    """A name with '/' must be its parent's name, '/', one segment; a top-level one has no '/'."""
    head, slash, _ = name.rpartition("/")
    if not slash:
        return
    if parent is None:
        raise Invalid(f"name {name!r}: a top-level account's name has no '/' "
                      f"(to put it under {head}, give it the parent {head})")
    if head != parent:
        raise Invalid(f"name {name!r} does not match its parent {parent}: "
                      f"a name with '/' is its parent's name, '/', one part")


def lookup_name(name: object, field: str = "account") -> str:
    """A name used only to find something: anything a column could hold. Control
    characters and NUL (which PostgreSQL refuses) are refused here, on every database."""
    if not isinstance(name, str) or not name or len(name) > NAME_MAX_LEN or not name.isprintable():
        raise Invalid(f"{field} must be 1 to {NAME_MAX_LEN} printable characters (got {_show(name)})")
    return name


def _show(value: object) -> str:
    text_ = repr(value)
    return text_ if len(text_) <= 40 else text_[:37] + "..."
