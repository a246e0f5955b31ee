"""Checkpoint a SQLite database's write-ahead log from a thread of its own.

In WAL mode a commit appends pages to the log; a checkpoint copies them back into the
database file and, with ``synchronous = NORMAL``, is the only fsync. SQLite runs one
inside whichever commit finds the log past ``wal_autocheckpoint`` pages, so now and then
a scheduling cycle paid for it (docs/benchmarks.md, "Fifth pass"). The server runs this
checkpointer beside the loop: every ``period_s`` it asks
for a PASSIVE checkpoint (it never waits for a reader or a writer, and none waits for
it), so the log stays short and commits only append.

Invariants:
- Correctness never depends on it: it only runs what a commit would otherwise run.
  Connections keep an automatic checkpoint as the backstop (``AUTOCHECKPOINT_PAGES`` in
  scheduler.store.engine), and the log file is trimmed to ``JOURNAL_SIZE_LIMIT``, so
  the log stays bounded when this thread is stopped, slow or failing.
- An error is logged once per distinct message and retried next period; the thread never
  dies of one. `stop()` ends it and closes its connection.
- It does nothing for PostgreSQL (`for_engine` returns None).
"""
from __future__ import annotations

import logging
import sqlite3
import threading

from sqlalchemy.engine import Engine

from scheduler.text import first_line

log = logging.getLogger("fairgpu.store")


class WalCheckpointer:
    def __init__(self, path: str, period_s: float = 0.05, timeout_s: float = 5.0):
        self.path = path
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.checkpoints = 0  # PASSIVE checkpoints run
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged: set[str] = set()

    @classmethod
    def for_engine(cls, engine: Engine, **kw) -> WalCheckpointer | None:
        """A checkpointer for a file SQLite engine, or None (PostgreSQL, in-memory SQLite)."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return cls(url.database, **kw)

    def start(self) -> WalCheckpointer:
        self._thread = threading.Thread(target=self._run, name="fairgpu-wal-checkpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def checkpoint(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, frames in the log, frames checkpointed)."""
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return tuple(row)

    def _run(self) -> None:
        conn = None
        while not self._stop.wait(self.period_s):
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None,
                                           check_same_thread=False)
                self.checkpoint(conn)
            except Exception as exc:  # a locked or vanished file: try again next period
                self.failures += 1
                message = first_line(exc)
                if message not in self._logged and len(self._logged) < 20:
                    self._logged.add(message)
                    log.warning("WAL checkpoint failed (retried; commits still checkpoint): %s", message)
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()
