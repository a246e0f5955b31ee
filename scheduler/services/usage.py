"""Usage records: import from other schedulers, and decayed usage per account.

CSV import is all or nothing: every row is parsed and checked (known leaf or inner
account, slice_seconds >= 0, `at` a date or ISO 8601 time) before one row is written,
and an error names the file's line number. `at` is read by the one strict time parser,
``validate.parse_when`` (its forms, UTC without a zone, 1970 or later), as
`fairgpu report --since` is.
"""
from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, select

from quota import decayed_usage
from scheduler.services.errors import DomainError, Invalid
from scheduler.services.validate import parse_when
from scheduler.store import Account, UsageRecord

COLUMNS = ("account", "slice_seconds", "at")


def read_usage_csv(path: str | Path, known_accounts: dict[str, int]) -> list[tuple[int, float, datetime]]:
    p = Path(path)
    try:
        handle = p.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DomainError(f"cannot read {p}: {exc.strerror or exc}") from None
    rows: list[tuple[int, float, datetime]] = []
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise DomainError(f"{p}: line 1: header must be {','.join(COLUMNS)}")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise DomainError(f"{p}: line {line}: expected 3 columns, got {len(row)}")
            name, seconds, at = (c.strip() for c in row)
            if name not in known_accounts:
                raise DomainError(f"{p}: line {line}: unknown account {name!r}")
            try:
                value = float(seconds)
            except ValueError:
                raise DomainError(f"{p}: line {line}: slice_seconds {seconds!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise DomainError(f"{p}: line {line}: slice_seconds must be a finite number >= 0 (got {seconds})")
            try:
                when = parse_when(at, "at")
            except Invalid as exc:
                raise DomainError(f"{p}: line {line}: {exc}") from None
            rows.append((known_accounts[name], value, when))
    return rows


def import_usage_csv(session: Session, path: str | Path) -> int:
    known = {a.name: a.id for a in session.exec(select(Account)).all()}
    return add_usage(session, read_usage_csv(path, known))


def add_usage(session: Session, rows: list[tuple[int, float, datetime]]) -> int:
    """Past usage, not tied to a job: (account id, slice_seconds, at) rows, as
    `read_usage_csv` checked them. Returns how many were added."""
    for account_id, value, when in rows:
        session.add(UsageRecord(account_id=account_id, slice_seconds=value, at=when))
    session.flush()
    return len(rows)


def decayed_by_account(session: Session, now: datetime, half_life_s: float) -> dict[str, float]:
    """Own (not rolled-up) decayed usage per account name."""
    names = {a.id: a.name for a in session.exec(select(Account)).all()}
    stmt = select(UsageRecord.account_id, UsageRecord.slice_seconds, UsageRecord.at)
    records = ((names[a], s, at.timestamp()) for a, s, at in session.exec(stmt).all() if a in names)
    return decayed_usage(records, now.timestamp(), half_life_s)
