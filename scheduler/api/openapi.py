"""What the OpenAPI document says about errors: one body, declared on every route.

Invariants:
- Every error answer is ``ErrorBody`` (``{"detail": "<one line>"}``), whatever the
  status; routes declare theirs with ``errors(...)``, so the document lists exactly
  the statuses a route can send.
- FastAPI's own 422 schema (``HTTPValidationError``, a list of problems) is never
  in the document: the app sends one line instead (``scheduler.api.app``), and
  ``error_schema_only`` rewrites any 422 a route did not declare itself.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BaseModel, Field

from quota.limits import NAME_MAX_LEN, NAME_SEGMENT_PATTERN, NAME_SEGMENT_RULE

DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON, or a header is invalid",
    401: "No bearer token, or an unknown, revoked or expired one",
    403: "The token may not do this (an institution token on an admin route, or a scrape token)",
    404: "No such thing, or the token may not see it (answered alike)",
    405: "The path does not take this method (the Allow header lists those it takes)",
    409: "Refused in the current state (a removal that would orphan jobs, a limit reached...)",
    413: "The request body is over the size limit",
    422: "An invalid value: the message names the field and the allowed range",
    503: "The database could not be reached",
}
AUTH = (401, 403, 503)  # every route behind a token
BODY = (400, 413, 422)  # every route that reads a JSON body

# Parameters that name something to look up. The patterns are what the names that can
# exist look like; they are declared, not enforced here: the services answer 404 (no such
# thing) or 422 (malformed) with their own one-line message, as they do for the CLI. A
# parameter that names something new (a node) declares no pattern it would not enforce.
ACCOUNT_PATTERN = rf"^{NAME_SEGMENT_PATTERN}(?:/{NAME_SEGMENT_PATTERN})*$"
TOKEN_KEY_PATTERN = r"^(?:[1-9][0-9]{0,8}|fg_[A-Za-z0-9_-]{1,60})$"  # an id, a display prefix or a whole token
_ACCOUNT_DOC = f"An account name: '/'-separated parts, each {NAME_SEGMENT_RULE}"
AccountPath = Annotated[str, Path(description=_ACCOUNT_DOC, max_length=NAME_MAX_LEN,
                                  json_schema_extra={"pattern": ACCOUNT_PATTERN})]
AccountQuery = Annotated[str | None, Query(description=_ACCOUNT_DOC, min_length=1, max_length=NAME_MAX_LEN,
                                           json_schema_extra={"pattern": ACCOUNT_PATTERN})]
TokenPath = Annotated[str, Path(description="A token's id, the display prefix `token list` shows "
                                            "(at least 4 characters), or the whole token",
                                json_schema_extra={"pattern": TOKEN_KEY_PATTERN})]
NodePath = Annotated[str, Path(description="The node's name (its hostname, as Ray reports it): printable, "
                                           "no surrounding whitespace", max_length=NAME_MAX_LEN)]


class ErrorBody(BaseModel):
    """Every error answer of the API, whatever its status."""

    detail: str = Field(description="One line that names what was wrong")


class HealthBody(BaseModel):
    """``/healthz``: the scheduling loop's health (only ``status`` without a loop)."""

    status: Literal["ok", "failing"]
    consecutive_failures: int | None = Field(default=None, description="Cycles failed in a row")
    failures_total: int | None = Field(default=None, description="Cycles failed since the server started")
    last_success_at: str | None = Field(default=None, description="When a cycle last succeeded (ISO 8601)")
    failing_since: str | None = Field(default=None, description="When the current run of failures began")
    last_error: str | None = Field(default=None, description="The latest cycle error, one line")


def errors(*codes: int) -> dict[int | str, dict]:
    """``responses=`` for a route that may answer these error statuses."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in sorted(set(codes))}


def error_schema_only(document: dict) -> dict:
    """The OpenAPI document with every 422 pointing at ErrorBody and FastAPI's
    validation-error schemas removed (a safety net for a route that forgot ``errors``)."""
    ref = "#/components/schemas/ErrorBody"
    for path in document.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answer = operation["responses"].get("422")
            if answer is not None:
                answer["description"] = DESCRIPTIONS[422]
                answer["content"] = {"application/json": {"schema": {"$ref": ref}}}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    return document
