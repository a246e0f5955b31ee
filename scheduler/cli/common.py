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
    The table is imported only when something was raised: it loads the store, which a
    command that never opens a database (``forecast --csv``) should not pay for."""

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


def info(message: str) -> None:
    click.echo(message, err=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def emit(rows: Sequence[dict], as_json: bool, columns: Sequence[str], title: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=None, header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(file=sys.stdout, width=200 if not sys.stdout.isatty() else None).print(table)
