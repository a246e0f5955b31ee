"""How the CLI writes times, durations and figures: one formatter for each, used by every
command (tables, `job show`, `logs`, `report`, `simulate`, `--json`).

Invariants:
- Times are ISO 8601 everywhere the CLI prints them, ``--json`` included. A time arrives
  as an ISO string (the API's), an aware ``datetime`` or epoch seconds (a task's own
  ``*_at`` figures, e.g. ``task_started_at``); naive values are UTC. ``when`` writes one
  to the second for people; ``exact_time`` keeps its microseconds for ``--json``.
  Text that is not a time is returned as it came.
- ``times_in`` rewrites, in a JSON-ready value, every epoch number under a key that
  names a time (``at``, ``*_at``, ``estimated_start``): nothing else changes, so figures in
  ``--json`` stay exact.
- ``figure`` rounds a number for a table: never scientific notation; a value too small
  to show at two decimals reads ``<0.01`` (not ``0.00``), integers stay integers.
- Standard library only: the client imports this at every command.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

TIME_KEYS = ("at", "estimated_start")  # besides every key ending in "_at"


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def instant(value: Any) -> datetime | None:
    """A time as an aware datetime (to compare times however they were written), or None."""
    return _to_datetime(value)


def when(value: Any) -> str | None:
    """A time to the second, ISO 8601 (``2026-11-28T09:00:10+00:00``); None for None;
    anything that is not a time, as text."""
    if value is None:
        return None
    at = _to_datetime(value)
    return at.replace(microsecond=0).isoformat() if at is not None else str(value)


def exact_time(value: Any) -> Any:
    """A time as ISO 8601 with its microseconds (for --json); a non-time unchanged."""
    at = _to_datetime(value)
    return at.isoformat() if at is not None else value


def is_time_key(key: str) -> bool:
    return key.endswith("_at") or key in TIME_KEYS


def times_in(value: Any) -> Any:
    """``value`` (dicts and lists, as JSON) with epoch numbers under time keys as ISO 8601."""
    if isinstance(value, dict):
        return {k: (exact_time(v) if isinstance(k, str) and is_time_key(k) and isinstance(v, (int, float))
                    and not isinstance(v, bool) else times_in(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [times_in(v) for v in value]
    return value


def duration(seconds: float) -> str:
    """12s, 3m20s, 1h05m, 2d03h."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def figure(value: Any, decimals: int = 2, *, trim: bool = False) -> str:
    """A number for a table: ``1234.57``, ``0.33``, ``<0.01``, ``12``; None as ``-``.
    ``trim``: without trailing zeros (``812.4`` rather than ``812.4000``)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    smallest = 10 ** -decimals
    if abs(value) < smallest:
        return f"<{smallest:.{decimals}f}" if value > 0 else f">-{smallest:.{decimals}f}"
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if trim and "." in text else text
