"""Shared database fixtures for every test package.

- ``sqlite_url``: a fresh SQLite file under ``tmp_path``.
- ``pg_url``: a fresh, uniquely named database on the PostgreSQL server at
  127.0.0.1:5432 (user ``postgres``, trust auth), dropped after the test.
- ``db_url``: parametrised over both (``[sqlite]`` and ``[postgres]`` ids).
- ``db_engine``: ``make_engine(db_url)`` with the schema migrated to head.
- ``pg_databases``: session-wide factory behind ``pg_url``, for fixtures of
  wider scope (``create() -> url``, ``drop(url)``).

If PostgreSQL cannot be reached, its cases are skipped with a visible reason,
except when ``CI`` is set: then they fail, since CI must test both databases.
``FAIRGPU_TEST_PG_HOST`` (host:port) points the suite at another server.
Database modules are imported inside fixtures so that collecting tests does
not import SQLAlchemy into suites that check they never need it.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

# pytest runs in importlib mode (test files in different folders may share a name), so
# each test folder's helper modules (builders, store_helpers, fake_nvml, ...) are put
# on sys.path here, as the default "prepend" mode would have done.
for _folder in sorted(Path(__file__).parent.iterdir()):
    if _folder.is_dir() and not _folder.name.startswith((".", "__")):
        sys.path.insert(0, str(_folder))

import pytest

PG_HOST = os.environ.get("FAIRGPU_TEST_PG_HOST", "127.0.0.1:5432")  # host:port
PG_ADMIN_URL = f"postgresql+psycopg://postgres@{PG_HOST}/postgres"


class PgDatabases:
    """Creates and drops throwaway databases through an AUTOCOMMIT admin engine."""

    def __init__(self, admin_engine) -> None:
        self._admin = admin_engine
        self._names: set[str] = set()

    def create(self) -> str:
        import sqlalchemy as sa

        name = f"fairgpu_test_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self._names.add(name)
        return f"postgresql+psycopg://postgres@{PG_HOST}/{name}"

    def drop(self, url: str) -> None:
        import sqlalchemy as sa

        name = url.rsplit("/", 1)[1]
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._names.discard(name)

    def drop_all(self) -> None:
        for name in list(self._names):
            self.drop(f"postgresql+psycopg://postgres@{PG_HOST}/{name}")


def _pg_unreachable(reason: str) -> None:
    message = f"PostgreSQL at {PG_HOST} is unreachable ({reason})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run the PostgreSQL store tests", pytrace=False)
    pytest.skip(f"{message}; skipping PostgreSQL cases (set up the server to run them)")


@pytest.fixture(scope="session")
def pg_databases():
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # no server, or no driver
        from scheduler.text import first_line

        _pg_unreachable(first_line(getattr(exc, "orig", None) or exc))
    dbs = PgDatabases(admin)
    yield dbs
    dbs.drop_all()
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'fairgpu.db'}"


@pytest.fixture
def pg_url(pg_databases):
    url = pg_databases.create()
    yield url
    pg_databases.drop(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def db_engine(db_url):
    from scheduler.store import init_db, make_engine

    engine = make_engine(db_url)
    init_db(engine)
    yield engine
    engine.dispose()


# After the last test, end the process without the interpreter's teardown. One clean-clone
# `make test` passed all 525 tests, printed its summary, and then segfaulted during
# interpreter shutdown. The kernel log showed a non-main thread jumping into freed memory,
# the pattern of a C extension's thread (Ray, TensorFlow, torch) outliving finalisation.
# That turned a pass into exit code 139. The exit status is pytest's own; nothing is
# skipped but the teardown of modules.
@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    session.config._fairgpu_exitstatus = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    status = getattr(config, "_fairgpu_exitstatus", None)
    if status is None or os.environ.get("FAIRGPU_TEST_SOFT_EXIT"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
