"""Group commit: concurrent writes queued to one thread that commits them in batches.

A caller hands ``Committer`` a piece of work, ``work(session) -> result``; the
committer's thread takes every piece queued so far (up to ``max_batch``), runs them
in arrival order in one transaction, commits, and only then answers each caller.

Invariants:
- A piece that raises one of ``refusals`` (a domain error: over its pending limit, a
  bad account...) is answered with it; its neighbours in the batch are unaffected
  and are committed. A piece queued with ``savepoint=True`` runs under a savepoint of
  its own, rolled back when it raises anything, and ``session.info`` (locks and counts
  memoised there, see ``services.jobs``) is put back as it was before the piece. One queued without a savepoint promises to raise its refusals before it
  writes; any other error it raises (a database error) aborts the whole batch, which
  is then run again piece by piece as below.
- Pieces see the writes of the pieces before them in the batch (one transaction,
  arrival order), so a check such as a pending limit is exact within a batch and,
  through the database's own locking, across writers.
- A piece may return ``Deferred(plan, answer)``: its checks are done, its write is
  left to ``flush(session, plans)``, which writes every deferred plan of the batch at
  once (``services.jobs.write_arrays``: two INSERTs a batch) after the last piece ran;
  its caller gets ``answer(what flush returned for its plan)``. A failing flush aborts
  the batch (then each piece runs alone, as below).
- A caller's answer is given only after the commit that made its piece durable.
  If the batch's commit itself fails, nothing of it was written: every piece is
  then run again alone, in its own transaction, and its caller gets that outcome.
  So every answered success is stored exactly once.
- A piece may carry ``prepare=(fn, key)``: before the batch's pieces run, each
  distinct ``fn`` is called once, in the batch's transaction, with the keys of its
  pieces in arrival order (``api.routes_jobs._prepare_batch``: one token query, one
  lock and one count of the pending limits a batch);
  ``fn`` leaves what it found where the pieces look (``session.info``). Alone, a
  piece's ``fn`` gets its key only. A ``fn`` that raises aborts the batch (then each
  piece runs alone, as below).
- ``after_commit`` (the scheduling loop's wake-up) runs once per batch that
  committed at least one success, after the commit and before the callers are answered.
- The thread starts on the first piece and exits after ``idle_exit_s`` with nothing
  to do (the next piece starts it again), so an app that is dropped leaves no thread.
  While it runs it keeps one connection for its batches (returned when it exits, and
  after a batch whose transaction failed, so that the pool checks it before its next use).
- No event loop is ever blocked here: ``submit_async`` returns an awaitable answered
  from the committer's thread through ``call_soon_threadsafe``, once per batch and loop.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from scheduler.store import session_scope
from scheduler.text import first_line

log = logging.getLogger("fairgpu.committer")

MAX_BATCH = 256


@dataclass(frozen=True)
class Deferred:
    """A piece's checked write, left to the batch's ``flush``; ``answer`` turns what the
    flush returned for ``plan`` into the caller's answer."""
    plan: Any
    answer: Callable[[Any], Any]


@dataclass
class _Piece:
    work: Callable[[Any], Any]
    future: Any  # a concurrent.futures.Future, or an asyncio.Future of `loop`
    loop: asyncio.AbstractEventLoop | None = None
    savepoint: bool = True
    prepare: tuple[Callable[[Any, list], None], Any] | None = None
    ok: bool = False
    value: Any = None


class Committer:
    def __init__(self, engine, *, after_commit: Callable[[], None] | None = None, max_batch: int = MAX_BATCH,
                 idle_exit_s: float = 5.0, refusals: tuple[type[BaseException], ...] | None = None,
                 flush: Callable[[Any, list], list] | None = None):
        from scheduler.services.errors import domain_classes

        self.engine = engine
        self.flush = flush
        self.refusals = refusals if refusals is not None else domain_classes()
        self.after_commit = after_commit
        self.max_batch = max_batch
        self.idle_exit_s = idle_exit_s
        self.batches = 0  # committed batches (a figure for the benchmarks and tests)
        self.pieces = 0
        self.failed_batches = 0  # batches whose transaction failed, so each piece ran alone
        self._queue: queue.SimpleQueue[_Piece] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- callers ------------------------------------------------------------------------
    def submit(self, work: Callable[[Any], Any], *, savepoint: bool = True,
               prepare: tuple[Callable[[Any, list], None], Any] | None = None) -> Future:
        """Queue ``work``; a future answered after the commit (for callers in a thread)."""
        piece = _Piece(work, Future(), savepoint=savepoint, prepare=prepare)
        self._put(piece)
        return piece.future

    def submit_async(self, work: Callable[[Any], Any], *, savepoint: bool = True,
                     prepare: tuple[Callable[[Any, list], None], Any] | None = None) -> asyncio.Future:
        """Queue ``work`` from a coroutine; await the answer without blocking the loop."""
        loop = asyncio.get_running_loop()
        piece = _Piece(work, loop.create_future(), loop, savepoint, prepare)
        self._put(piece)
        return piece.future

    def _put(self, piece: _Piece) -> None:
        self._queue.put(piece)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fairgpu-committer", daemon=True)
                self._thread.start()

    # -- the committer's thread -----------------------------------------------------------
    def _run(self) -> None:
        conn = None  # held from batch to batch while busy: no pool checkout and ping per batch
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self.idle_exit_s)
                except queue.Empty:
                    with self._lock:  # exit only if nothing came in meanwhile (_put checks under the lock)
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if conn is None:
                    conn = self._connect()
                if not self._commit(batch, conn) and conn is not None:  # the connection may be what failed
                    self._release(conn)  # back to the pool, which checks it before its next use
                    conn = None
        finally:
            if conn is not None:
                self._release(conn)

    def _connect(self):
        """A connection to hold, or None when none can be had now: the batch then runs on
        the engine and meets the same error in its transaction (its callers are answered)."""
        try:
            return self.engine.connect()
        except Exception as exc:  # noqa: BLE001 - whatever it is, _commit's transaction meets it again
            log.warning("the committer could not connect (%s)", first_line(exc))
            return None

    @staticmethod
    def _release(conn) -> None:
        try:
            conn.close()
        except Exception:  # a dead connection: the thread must live on to answer the next batches
            log.exception("closing the committer's connection failed")

    def _commit(self, batch: list[_Piece], conn) -> bool:
        """Run and commit ``batch`` on ``conn`` (None: a connection of its own); False when
        its transaction failed (each piece then ran alone, on connections of its own)."""
        committed = True
        try:
            with session_scope(conn if conn is not None else self.engine) as s:
                self._prepare(s, batch)
                for piece in batch:
                    self._run_piece(s, piece)
                self._flush(s, [p for p in batch if p.ok and isinstance(p.value, Deferred)])
        except Exception as exc:  # noqa: BLE001 - the transaction failed, whatever the cause: nothing was written
            log.warning("group commit of %d failed (%s); each runs alone", len(batch), first_line(exc))
            self.failed_batches += 1
            committed = False
            for piece in batch:
                try:
                    with session_scope(self.engine) as s:
                        self._prepare(s, [piece])
                        self._run_piece(s, piece, alone=True)
                        self._flush(s, [piece] if isinstance(piece.value, Deferred) else [])
                except Exception as again:  # noqa: BLE001 - its caller gets it, whatever it is
                    piece.ok, piece.value = False, again
        self.batches += 1
        self.pieces += len(batch)
        if self.after_commit is not None and any(p.ok for p in batch):
            try:
                self.after_commit()
            except Exception:  # a wake-up that fails must not lose the answers
                log.exception("after_commit failed")
        self._answer(batch)
        return committed

    @staticmethod
    def _prepare(s, pieces: list[_Piece]) -> None:
        keys: dict[Callable, list] = {}
        for piece in pieces:
            if piece.prepare is not None:
                fn, key = piece.prepare
                keys.setdefault(fn, []).append(key)
        for fn, of_fn in keys.items():
            fn(s, of_fn)

    def _run_piece(self, s, piece: _Piece, alone: bool = False) -> None:
        """Run one piece in the batch's transaction. Alone (its own transaction), whatever
        it raises is its answer and its transaction rolls back."""
        memo = None
        try:
            if piece.savepoint and not alone:
                memo = {k: copy.copy(v) for k, v in s.info.items()}
                with s.begin_nested():
                    piece.value = piece.work(s)
            else:
                piece.value = piece.work(s)
            piece.ok = True
        except Exception as exc:
            if alone:
                raise
            if memo is not None:  # what the piece memoised (locks, counts: services.jobs) went with its savepoint
                s.info.clear()
                s.info.update(memo)
            elif not isinstance(exc, self.refusals):
                raise  # it may have written part of itself: the batch is aborted, each then runs alone
            piece.ok, piece.value = False, exc

    def _flush(self, s, pieces: list[_Piece]) -> None:
        if not pieces:
            return
        if self.flush is None:
            raise TypeError("a piece returned Deferred, but this committer has no flush")
        written = self.flush(s, [p.value.plan for p in pieces])
        for piece, result in zip(pieces, written, strict=True):
            piece.value = piece.value.answer(result)

    @staticmethod
    def _answer(batch: list[_Piece]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Piece]] = {}
        for piece in batch:
            if piece.loop is None:
                if piece.ok:
                    piece.future.set_result(piece.value)
                else:
                    piece.future.set_exception(piece.value)
            else:
                by_loop.setdefault(piece.loop, []).append(piece)
        for loop, pieces in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, pieces)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                pass


def _settle(pieces: list[_Piece]) -> None:
    for piece in pieces:
        if piece.future.cancelled():  # the client went away; its piece is committed all the same
            continue
        if piece.ok:
            piece.future.set_result(piece.value)
        else:
            piece.future.set_exception(piece.value)
