"""Engines from URLs: defaults, SQLite settings, redaction, errors, sessions."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.store import Account, StoreError, default_db_url, make_engine, redact_url, session_scope
from scheduler.store.engine import SQLITE_BUSY_TIMEOUT_S


def test_default_url_is_a_sqlite_file_in_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("FAIRGPU_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url = default_db_url()
    assert url == f"sqlite:///{tmp_path / 'data' / 'fairgpu' / 'fairgpu.db'}"
    assert (tmp_path / "data" / "fairgpu").is_dir()


def test_env_overrides_default(monkeypatch):
    monkeypatch.setenv("FAIRGPU_DB", "postgresql://u:p@db/x")
    assert default_db_url() == "postgresql://u:p@db/x"


@pytest.mark.parametrize(
    "url,shown",
    [
        ("postgresql+psycopg://alice:s3cret@db:5432/fair", "postgresql+psycopg://alice:***@db:5432/fair"),
        ("postgres://alice:p%40ss@db/fair", "postgres://alice:***@db/fair"),
        ("postgresql://alice@db/fair", "postgresql://alice@db/fair"),
        ("sqlite:////var/lib/fairgpu.db", "sqlite:////var/lib/fairgpu.db"),
        ("not a url://bob:pw@host", "not a url://bob:***@host"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_sqlite_connection_settings(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT_S * 1000
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("foreign_keys") == 1
    engine.dispose()


def test_sqlite_transactions_begin_immediate(sqlite_url):
    engine = make_engine(sqlite_url)
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT 1")
    assert statements[0] == "BEGIN IMMEDIATE"
    engine.dispose()


@pytest.mark.parametrize("make_path", [lambda p: p / "missing-dir" / "x.db", lambda p: p])
def test_unopenable_sqlite_path(tmp_path, make_path):
    url = f"sqlite:///{make_path(tmp_path)}"
    with pytest.raises(StoreError, match=r"^cannot open database sqlite:///.*: ") as err:
        make_engine(url)
    assert "\n" not in str(err.value)


def test_unknown_backend_and_garbage_url():
    with pytest.raises(StoreError, match="cannot open database mysql://u:\\*\\*\\*@h/d"):
        make_engine("mysql://u:pw@h/d")
    with pytest.raises(StoreError, match="cannot open database nonsense"):
        make_engine("nonsense")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://fair:TopSecret42@no-such-host.invalid:5432/fair",
        "postgres://fair:TopSecret42@127.0.0.1:1/fair",
    ],
)
def test_bad_postgres_url_never_leaks_the_password(url):
    with pytest.raises(StoreError) as err:
        make_engine(url)
    message = str(err.value)
    assert message.startswith(f"cannot open database {redact_url(url)}: ")
    assert "TopSecret42" not in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgres_schemes_use_psycopg(pg_url, scheme):
    engine = make_engine(pg_url.replace("postgresql+psycopg", scheme, 1))
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_session_scope_commits_or_rolls_back(db_engine):
    with session_scope(db_engine) as s:
        s.add(Account(name="kept", weight=1))
    with pytest.raises(RuntimeError), session_scope(db_engine) as s:
        s.add(Account(name="dropped", weight=1))
        s.flush()
        raise RuntimeError("boom")
    with session_scope(db_engine) as s:
        names = s.exec(sa.select(Account.name)).scalars().all()
    assert names == ["kept"]


def test_default_url_needs_no_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("FAIRGPU_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    engine = make_engine()
    assert Path(engine.url.database) == tmp_path / "fairgpu" / "fairgpu.db"
    engine.dispose()
