"""Writers in one process queue on the engine's own lock before BEGIN IMMEDIATE: the lock
is released by commit and by rollback (a failed transaction must not keep the next writer
waiting out the 30 s timeout), and writers from several threads all get through."""
from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from scheduler.store import init_db, make_engine, session_scope


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    init_db(eng)
    yield eng
    eng.dispose()


def _insert(s, key: str) -> None:
    s.connection().execute(sa.text("INSERT INTO setting (key, value) VALUES (:k, 'x')"), {"k": key})


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM setting")).scalar_one()


def test_a_rolled_back_writer_releases_the_lock(engine):
    for i in range(3):
        with pytest.raises(RuntimeError):
            with session_scope(engine) as s:
                _insert(s, f"lost{i}")
                raise RuntimeError("the caller failed mid-transaction")
    t0 = time.monotonic()
    with session_scope(engine) as s:
        _insert(s, "kept")
    assert time.monotonic() - t0 < 5.0  # not the 30 s a leaked lock would cost
    assert _count(engine) == 1


def test_a_failed_statement_releases_the_lock(engine):
    with session_scope(engine) as s:
        _insert(s, "dup")
    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(engine) as s:
            _insert(s, "dup")
    done = threading.Event()

    def writer():
        with session_scope(engine) as s:
            _insert(s, "after")
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    assert done.wait(5.0)
    assert _count(engine) == 2


def test_writers_from_many_threads_all_commit(engine):
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                with session_scope(engine) as s:
                    _insert(s, f"t{t}-{i}")
                with session_scope(engine, readonly=True) as s:  # readers take no writer lock
                    s.connection().execute(sa.text("SELECT COUNT(*) FROM setting")).scalar_one()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors
    assert _count(engine) == 6 * 40
