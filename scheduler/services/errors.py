"""Errors a user can act on, and the one table that maps them to HTTP statuses and exit codes.

Invariants:
- Each message is one line and names what was wrong (for a bad value: the field and
  its allowed range, see ``quota.limits``).
- ``ERRORS`` is the only map from a domain error to an HTTP status and a CLI exit
  code; ``scheduler.api.app`` and ``scheduler.cli.common`` both read it through
  ``classify``. Rows run from the most specific class to the most general; the first
  row the error is an instance of wins. Every domain error exits the CLI with 1
  (click's own usage errors exit 2).
"""
from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class DomainError(Exception):
    """A request the domain refuses in the current state (conflict): refused removal, limit reached..."""


class NotFound(DomainError):
    """The thing does not exist (or the caller may not see it: the API answers 404 alike)."""


class Invalid(DomainError):
    """The request itself is wrong whatever the state: a malformed name, duration or job."""


class Forbidden(DomainError):
    """The caller is known but may not do this (an institution asking for an admin action)."""


class Outcome(NamedTuple):
    http_status: int
    exit_code: int


# (module, class name, HTTP status, CLI exit code): most specific first. Classes are named,
# not imported, so reading this table loads no database layer (a client command's error
# path stays light, and a client-only install has no store to import).
_TABLE = (
    (__name__, "NotFound", 404, 1),
    (__name__, "Forbidden", 403, 1),
    (__name__, "Invalid", 422, 1),
    ("quota.limits", "LimitError", 422, 1),                     # a value outside its range in quota.limits
    ("quota.errors", "QuotaError", 409, 1),                     # the tree as a whole breaks a rule
    ("scheduler.store.transitions", "InvalidTransition", 409, 1),  # the job's state no longer allows it
    (__name__, "DomainError", 409, 1),
    ("scheduler.store.engine", "StoreError", 503, 1),           # the database could not be reached or opened
)


def _rows(loaded_only: bool) -> tuple[tuple[type[BaseException], int, int], ...]:
    """The table with its classes. With ``loaded_only``, rows whose module was never imported
    are left out: no instance of a class can exist before its module ran."""
    rows = []
    for module, name, status, code in _TABLE:
        mod = sys.modules.get(module) if loaded_only else importlib.import_module(module)
        cls = getattr(mod, name, None)  # None: not loaded (or still loading: nothing raised it yet)
        if cls is not None:
            rows.append((cls, status, code))
    return tuple(rows)


def __getattr__(name: str):
    if name == "ERRORS":  # the whole table (imports the store): the API's exception handlers
        return _rows(loaded_only=False)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def classify(exc: BaseException) -> Outcome | None:
    """The (HTTP status, exit code) of a domain error; None for anything else (a bug: 500)."""
    for cls, status, code in _rows(loaded_only=True):
        if isinstance(exc, cls):
            return Outcome(status, code)
    return None


def domain_classes() -> tuple[type[BaseException], ...]:
    return tuple(cls for cls, _, _ in _rows(loaded_only=False))
