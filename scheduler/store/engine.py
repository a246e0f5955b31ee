"""Engines, sessions and schema set-up for fairgpu's persistent state.

Invariants:
- An engine comes from a URL only: SQLite (the default file under the user's
  data directory, or ``FAIRGPU_DB``) or PostgreSQL through psycopg 3.
- Every SQLite transaction starts with ``BEGIN IMMEDIATE`` on a WAL database
  with a busy timeout, so concurrent writers queue for the lock instead of
  failing with "database is locked" (a deferred transaction that reads then
  writes can fail at once, whatever the timeout).
- No message raised from here contains a database password: every failure to
  open or connect is a one-line ``StoreError`` naming the redacted URL.
- The schema is owned by Alembic: ``init_db`` runs ``upgrade head``; nothing
  calls ``metadata.create_all``.
- Memory that mirrors the database follows its commits: what a transaction's work hands
  ``after_commit`` runs once ``session_scope`` committed it, and never if it rolled back.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlmodel import Session

from scheduler.text import first_line

ENV_VAR = "FAIRGPU_DB"
_HOLDS_WRITERS = "fairgpu.holds_writer_lock"
SQLITE_BUSY_TIMEOUT_S = 30
PG_CONNECT_TIMEOUT_S = 10
_PG_ADVISORY_LOCK_KEY = 0x66616972  # "fair": serialises concurrent init_db on PostgreSQL


class StoreError(Exception):
    """A storage failure, with a one-line message fit for a CLI."""


def default_db_url() -> str:
    """``FAIRGPU_DB`` if set, else a SQLite file in the user's data directory."""
    override = os.environ.get(ENV_VAR)
    if override:
        return override
    import platformdirs

    data_dir = Path(platformdirs.user_data_dir("fairgpu"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'fairgpu.db'}"


def redact_url(url: str | URL) -> str:
    """The URL with its password (if any) replaced by ``***``."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception:
        return _redact_unparsable(str(url))
    return parsed.render_as_string(hide_password=True)  # renders the password as ***


def _redact_unparsable(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def _normalise(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _short_reason(exc: BaseException, password: str | None) -> str:
    orig = getattr(exc, "orig", None) or exc
    reason = first_line(orig)
    if password:
        reason = reason.replace(password, "***")
    return reason


def make_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default: ``default_db_url()``), checked by connecting once."""
    raw = url if url is not None else default_db_url()
    shown = redact_url(raw)
    password: str | None = None
    try:
        parsed = _normalise(raw)
        password = parsed.password
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed)
        elif parsed.get_backend_name() == "postgresql":
            engine = _postgres_engine(parsed)
        else:
            raise StoreError(f"cannot open database {shown}: unsupported backend {parsed.drivername!r}")
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot open database {shown}: {_short_reason(exc, password)}") from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        engine.dispose()
        raise StoreError(f"cannot open database {shown}: {_short_reason(exc, password)}") from None
    return engine


# A commit that finds the write-ahead log past this many pages checkpoints it (SQLite's
# default). The server checkpoints from a thread of its own (scheduler.store.checkpoint),
# so this is the backstop; the log file is trimmed to JOURNAL_SIZE_LIMIT bytes after one.
AUTOCHECKPOINT_PAGES = 1000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# Each connection's page cache (SQLite's default is 2 MiB): the loop's working set, the
# job table and its indexes at 100k waiting jobs, is several times that.
CACHE_KIB = 16 * 1024


def _sqlite_engine(url: URL) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Take transaction control away from pysqlite so "begin" below decides.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")  # the backstop (store.checkpoint)
        cur.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        cur.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    # Writers in this process queue on a lock of their own before asking SQLite: a
    # waiter is woken the moment the writer ahead commits, where SQLite's busy handler
    # would sleep and poll (1, 2, 5, 10 ... ms). Other processes still meet at SQLite's
    # lock; the wait here is bounded by the same timeout, then SQLite's handler decides.
    writers = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # Writers take the write lock up front (a deferred transaction that reads, then
        # writes, can fail at once with "database is locked"). A read-only scope begins
        # deferred: in WAL mode it reads a consistent snapshot and blocks no writer.
        if conn.get_execution_options().get(READONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
            return
        held = writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_S)
        conn.info[_HOLDS_WRITERS] = held
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn)
            raise

    def _release(conn) -> None:
        if conn.info.pop(_HOLDS_WRITERS, False):
            writers.release()

    event.listen(engine, "commit", _release)
    event.listen(engine, "rollback", _release)
    return engine


def _postgres_engine(url: URL) -> Engine:
    connect_args = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


READONLY_OPTION = "fairgpu_readonly"
_AFTER_COMMIT = "fairgpu.after_commit"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn()`` once ``session``'s transaction has committed (``session_scope`` runs
    them, in the order given); a transaction that rolls back drops them. A cache changed
    this way is never ahead of the database."""
    session.info.setdefault(_AFTER_COMMIT, []).append(fn)


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error; after a commit it runs
    what was handed ``after_commit``.

    Objects stay readable after the block (``expire_on_commit=False``), so a
    worker can load in one short transaction and apply in another.
    ``readonly=True`` is for transactions that only read: on SQLite they do not take
    the write lock (nothing stops them from writing, so do not).
    """
    bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
    session = Session(bind, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        later = session.info.pop(_AFTER_COMMIT, ())
        session.close()
    for fn in later:  # reached only once the commit succeeded
        fn()


def alembic_config():
    """An Alembic ``Config`` pointing at the migrations shipped in the package."""
    from alembic.config import Config

    here = resources.files("scheduler") / "migrations"
    config = Config(str(here / "alembic.ini"))
    config.set_main_option("script_location", str(here))
    return config


def init_db(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``).

    Idempotent. Concurrent callers serialise: on SQLite through the
    ``BEGIN IMMEDIATE`` write lock held for the whole upgrade, on PostgreSQL
    through a transaction-scoped advisory lock.
    """
    from alembic import command

    config = alembic_config()
    backend = engine.dialect.name
    try:
        with engine.connect() as conn:
            if backend == "sqlite":
                # Outside any transaction (pysqlite is in autocommit mode here), so
                # batch migrations that recreate a table cannot cascade deletes.
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
            try:
                with conn.begin():
                    if backend == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ADVISORY_LOCK_KEY})
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
                    if backend == "sqlite":
                        bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if bad:
                            raise StoreError(f"migration left {len(bad)} rows violating foreign keys")
            finally:
                if backend == "sqlite":
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")
    except StoreError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        url = engine.url
        raise StoreError(
            f"cannot migrate database {redact_url(url)}: {_short_reason(exc, url.password)}"
        ) from exc
