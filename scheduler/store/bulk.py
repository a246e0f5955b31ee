"""executemany without SQLAlchemy's per-row parameter handling, for the loop's batches;
reads through the driver's cursor (`fetch_all`).

Invariants:
- The statement is SQLAlchemy's, compiled once per (statement, parameter names) for the
  connection's dialect, and every value goes through its type's public bind processor
  (`dialect_impl(dialect).bind_processor(dialect)`, `bind_processors`), the function
  `connection.execute(stmt, rows)` applies: what is stored is exactly what it stores.
  Positions come from the compiled statement's `positiontup` (its parameter names in
  order), values from each row by name.
- It runs on the connection's DBAPI cursor, inside the transaction the connection holds
  (the caller's session has begun it). Only SQLite takes this path; other dialects run
  `connection.execute` as usual (psycopg batches on its own).
- A datetime is converted once per batch (rows mostly share their times): equal value and
  zone give equal text.
- Returns the rows matched (the DBAPI's rowcount, summed over the batch by sqlite3).

Per row, SQLAlchemy builds a parameter dict through the compiled statement's
`construct_params` and an execution context; for the few hundred rows a scheduling cycle
writes, that bookkeeping cost more than SQLite's work.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

_PLANS: dict[tuple, tuple | None] = {}


def bind_processors(compiled, dialect) -> dict[str, Callable[[Any], Any]]:
    """{parameter name: bind processor} of a compiled statement's parameters whose type has
    one for `dialect`: SQLAlchemy's public `TypeEngine.bind_processor`, through the type's
    dialect implementation (a TypeDecorator's `process_bind_param`, then its impl's)."""
    out = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            out[name] = process
    return out


def _plan(stmt, dialect, keys: tuple[str, ...]) -> tuple | None:
    """(SQL text, {literal name: value}, a getter of the values in positional order,
    ((position, bind processor), ...)), or None
    where a value would come from elsewhere (a column default, an INSERT's missing column):
    then the caller lets SQLAlchemy execute it."""
    key = (stmt, dialect.name, keys)
    if key in _PLANS:
        return _PLANS[key]
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if stmt.is_insert else None)
    columns = {c.key for c in stmt.table.c}
    own = set(keys)
    plan = None
    binds = compiled.binds
    if not compiled.positional or not compiled.positiontup:
        pass  # a named paramstyle: the ordinary path
    elif all(name in own or (not stmt.is_insert and name in binds and not binds[name].required
                           and name not in columns)
           for name in compiled.positiontup):  # only the caller's values and the statement's literals
        processors = bind_processors(compiled, dialect)
        names = tuple(compiled.positiontup)
        literals = {name: binds[name].effective_value for name in names if name not in own}
        convert = tuple((i, processors[name]) for i, name in enumerate(names) if name in processors)
        plan = (compiled.string, literals, itemgetter(*names) if len(names) > 1 else lambda d: (d[names[0]],),
                convert)
    if len(_PLANS) > 256:  # a handful of shapes in practice
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def execute_many(conn: sa.Connection, stmt, rows: list[dict[str, Any]]) -> int:
    """`conn.execute(stmt, rows).rowcount` for rows that all have the same keys."""
    if not rows:
        return 0
    if conn.dialect.name != "sqlite" or conn.dialect.paramstyle != "qmark":
        return conn.execute(stmt, rows).rowcount
    plan = _plan(stmt, conn.dialect, tuple(sorted(rows[0])))
    if plan is None:
        return conn.execute(stmt, rows).rowcount
    sql, literals, values, convert = plan
    params = []
    done: dict = {}  # a batch's rows mostly share their times: convert each once
    for row in rows:
        if literals:
            row = {**literals, **row}
        out = list(values(row))
        for i, process in convert:
            value = out[i]
            if type(value) is datetime:
                key = (process, value, value.tzinfo, value.fold)  # the same instant in the same zone
                hit = done.get(key)
                out[i] = hit if hit is not None else done.setdefault(key, process(value))
            else:
                out[i] = process(value)
        params.append(out)
    cursor = conn.connection.cursor()
    try:
        cursor.executemany(sql, params)
        return cursor.rowcount
    finally:
        cursor.close()


def fetch_all(conn: sa.Connection, sql: str, params: tuple = ()) -> list[tuple]:
    """All rows of `sql` through the DBAPI cursor, in the transaction the connection holds
    (SQLite's fast reads: the caller decodes them, scheduler.store.jobrow)."""
    cursor = conn.connection.cursor()
    try:
        return cursor.execute(sql, params).fetchall()
    finally:
        cursor.close()
