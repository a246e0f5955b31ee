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


def _rows() -> tuple[tuple[type[BaseException], int, int], ...]:
    from quota import QuotaError
    from quota.limits import LimitError
    from scheduler.store import InvalidTransition, StoreError

    return (
        # (error class, HTTP status, CLI exit code): most specific first
        (NotFound, 404, 1),
        (Forbidden, 403, 1),
        (Invalid, 422, 1),
        (LimitError, 422, 1),         # a value outside its range in quota.limits
        (QuotaError, 409, 1),         # the tree as a whole breaks a rule (guarantees over the parent's...)
        (InvalidTransition, 409, 1),  # the job is no longer in a state that allows it (StaleJob included)
        (DomainError, 409, 1),
        (StoreError, 503, 1),         # the database could not be reached or opened
    )


ERRORS = _rows()


def classify(exc: BaseException) -> Outcome | None:
    """The (HTTP status, exit code) of a domain error; None for anything else (a bug: 500)."""
    for cls, status, code in ERRORS:
        if isinstance(exc, cls):
            return Outcome(status, code)
    return None


def domain_classes() -> tuple[type[BaseException], ...]:
    return tuple(cls for cls, _, _ in ERRORS)
