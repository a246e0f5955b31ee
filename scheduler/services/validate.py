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
"""
from __future__ import annotations

import math
import re

from quota import limits
from quota.limits import ID, NAME_MAX_LEN, NAME_SEGMENT_PATTERN, NAME_SEGMENT_RULE, Range
from scheduler.services.errors import Invalid

__all__ = ["ID", "NAME_MAX_LEN", "DURATION_MAX_LEN", "limits", "JOB_NUMBERS", "number", "optional", "job_numbers",
           "parse_duration", "describe_duration", "text", "account_name", "account_place", "lookup_name"]

_SEGMENT = re.compile(NAME_SEGMENT_PATTERN)
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
DURATION_MAX_LEN = 32  # characters: far more than any duration in range needs

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
