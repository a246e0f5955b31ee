"""The server's WAL checkpointer (scheduler.store.checkpoint) and its process settings
(scheduler.loop.collector), on real SQLite files and the real PostgreSQL."""
from __future__ import annotations

import gc
import os
import sqlite3
import time

import sqlalchemy as sa

from scheduler.loop import collector
from scheduler.store import make_engine
from scheduler.store.checkpoint import WalCheckpointer
from scheduler.store.engine import AUTOCHECKPOINT_PAGES


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_checkpointer_keeps_the_log_checkpointed_while_commits_only_append(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == AUTOCHECKPOINT_PAGES
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (x TEXT)")
    with engine.begin() as c:  # a few hundred pages in the log, below the commit's own threshold
        c.exec_driver_sql("INSERT INTO t SELECT hex(randomblob(500)) FROM "
                          "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 800) "
                          "SELECT i FROM n)")
    path = engine.url.database
    before = os.path.getsize(path)  # the rows are in the log only, below a commit's own threshold
    cp = WalCheckpointer.for_engine(engine, period_s=0.01).start()
    try:
        _wait(lambda: cp.checkpoints >= 2)
        assert os.path.getsize(path) > before + 300 * 1024  # copied back into the database file
        probe = sqlite3.connect(path)
        busy, log_frames, done = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        probe.close()
        assert busy == 0 and done == log_frames  # nothing left to copy
        assert cp.failures == 0
    finally:
        cp.stop()
    assert not cp._thread.is_alive()
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM t").scalar() == 800
    engine.dispose()


def test_a_failing_checkpoint_is_counted_and_retried_not_fatal(tmp_path, caplog):
    cp = WalCheckpointer(str(tmp_path), period_s=0.01).start()  # a directory: cannot be opened
    try:
        _wait(lambda: cp.failures >= 3)
        assert cp._thread.is_alive()
    finally:
        cp.stop()
    assert sum("WAL checkpoint failed" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_postgresql_needs_no_checkpointer(pg_url):
    engine = make_engine(pg_url)
    assert WalCheckpointer.for_engine(engine) is None
    assert WalCheckpointer.for_engine(sa.create_engine("sqlite://")) is None  # in memory
    engine.dispose()


def test_tune_raises_the_young_threshold_only():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert collector.tune() == (collector.YOUNG, 10, 10)
        assert collector.tune() == (collector.YOUNG, 10, 10)  # idempotent
        gc.set_threshold(50_000, 20, 30)
        assert collector.tune() == (50_000, 20, 30)  # never lowered
        gc.set_threshold(0, 10, 10)
        assert collector.tune() == (0, 10, 10)  # collection left off by whoever turned it off
    finally:
        gc.set_threshold(*before)
