"""A read-only scope on SQLite begins deferred: it reads a snapshot and does not keep a
writer waiting, while an ordinary scope holds the write lock until it ends."""
from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from scheduler.store import init_db, make_engine, session_scope


def _write_takes(engine, hold_open) -> float:
    done = {}

    def writer():
        t0 = time.monotonic()
        with session_scope(engine) as s:
            s.connection().execute(sa.text("INSERT INTO setting (key, value) VALUES (:k, 'x')"),
                                   {"k": f"k{time.monotonic_ns()}"})
        done["s"] = time.monotonic() - t0

    with hold_open() as s:
        s.connection().execute(sa.text("SELECT COUNT(*) FROM job")).scalar()
        t = threading.Thread(target=writer)
        t.start()
        t.join(timeout=1.0)
        blocked = t.is_alive()
    t.join(timeout=30)
    return float("inf") if blocked else done["s"]


def test_readonly_scope_does_not_block_writers_but_a_write_scope_does(sqlite_url):
    engine = make_engine(sqlite_url)
    init_db(engine)
    assert _write_takes(engine, lambda: session_scope(engine, readonly=True)) < 1.0
    assert _write_takes(engine, lambda: session_scope(engine)) == float("inf")
    with session_scope(engine, readonly=True) as s:  # and it reads what was written
        assert s.connection().execute(sa.text("SELECT COUNT(*) FROM setting")).scalar() == 2
