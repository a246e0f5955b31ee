"""An error in one line: `first_line`, the one rule for every message fairgpu shortens.

The API's `detail`, the CLI's error, the loop's health key, a job's reason, Ray's
refusals and the logs' "failed (...)" all show an error as its first non-blank line,
stripped; a message with none shows a default (an exception: its type's name).
Cutting to a length stays with the caller (each place has its own budget).

Why here: standard library only, on the lowest floor of `scheduler/` beside `vocab`,
so every layer may import it: the store, the services, the API, the CLI, the loop and
the Ray side.
"""
from __future__ import annotations


def first_line(what: object, default: str | None = None) -> str:
    """The first non-blank line of `what` (an exception or a text), stripped. With none:
    `default`; without one, an exception's type name, or ""."""
    for line in str(what).splitlines():
        line = line.strip()
        if line:
            return line
    if default is not None:
        return default
    return type(what).__name__ if isinstance(what, BaseException) else ""
