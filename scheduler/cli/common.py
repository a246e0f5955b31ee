"""Shared CLI pieces: the --db and --json options, output, the one place that opens a
database session, and the one place that turns domain errors into exit codes, read from
``services.errors.ERRORS`` (the API reads the same table): 1 for every domain error;
click itself exits 2 on usage errors.

Invariants:
- Messages go to stderr; results (tables, JSON) to stdout.
- A command that reads or writes the database does it inside ``db_session(db_url)``:
  one transaction, committed when the block ends normally, rolled back otherwise.
  Checks that need no database run before the block, and success is reported
  after it, so nothing is announced before its commit.
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

db_option = click.option(
    "--db", "db_url", envvar="FAIRGPU_DB", default=None, metavar="URL",
    help="Database URL (sqlite:///PATH or postgresql+psycopg://...). Default: a SQLite file in the user data dir.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def domain_errors(func: Callable) -> Callable:
    """Turn the errors a user can act on (``services.errors.ERRORS``) into one line on
    stderr and their exit status (1); anything else is a bug and keeps its traceback.
    The table is read only when something was raised, and ``classify`` looks only at
    classes whose modules are loaded: a client command's refusal loads no store."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            from scheduler.services.errors import classify
            from scheduler.text import first_line

            outcome = classify(exc)
            if outcome is None:
                raise
            error = click.ClickException(first_line(exc))
            error.exit_code = outcome.exit_code
            raise error from None

    return wrapper


def open_engine(db_url: str | None):
    from scheduler.store import init_db, make_engine

    engine = make_engine(db_url)
    init_db(engine)
    return engine


@contextlib.contextmanager
def db_session(db_url: str | None) -> Iterator[Any]:
    """A session on the database at ``db_url`` (migrated first), in one transaction
    (``store.session_scope``); the engine is disposed of when the block ends."""
    from scheduler.store import session_scope

    engine = open_engine(db_url)
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def existing_database(db_url: str) -> None:
    """Refuse (exit 1, one line) a SQLite URL whose file does not exist: a command that
    only reads a server's database (`simulate --from-db`, `forecast --from-db`) must not
    create and migrate an empty one where the user mistyped a path."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(db_url)
    except ArgumentError:
        return  # db_session's own error says what is wrong with it
    path = url.database
    if url.get_backend_name() == "sqlite" and path and path != ":memory:" and not path.startswith("file:"):
        from pathlib import Path

        if not Path(path).is_file():
            raise click.ClickException(f"cannot open database {db_url}: no such file {path} (nothing was created)")


def info(message: str) -> None:
    click.echo(message, err=True)


def _cell(value: Any) -> str:
    from scheduler.cli.formatting import figure  # the one rule for figures in tables

    if value is None:
        return "-"
    if isinstance(value, float):
        return figure(value, trim=True)  # 2 decimals at most: 3, 0.33, 12.5, <0.01
    return str(value)


def emit(rows: Sequence[dict], as_json: bool, columns: Sequence[str], title: str | None = None) -> None:
    """Rows as JSON, or as a plain table: one line per row, columns padded to their widest
    cell, never wrapped (pipe it to ``less -S`` or pick fewer columns). Plain text keeps a
    client command from loading rich's console (about a third of its start-up)."""
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    click.echo("\n".join(table_lines(rows, columns, title, bold=sys.stdout.isatty())))


def table_lines(rows: Sequence[dict], columns: Sequence[str], title: str | None = None, *,
                bold: bool = False) -> list[str]:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    header = "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()
    lines = [title] if title else []
    lines.append(click.style(header, bold=True) if bold else header)
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return lines
