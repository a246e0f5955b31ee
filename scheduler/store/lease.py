"""The leader lease: exactly one scheduling loop per database, on SQLite and PostgreSQL.

One row (``leader_lease``, id 1) names the server that runs the loop: host, pid, a
fencing ``epoch`` and when its lease expires. A lease row, not an advisory lock: a
process stopped with SIGSTOP keeps its connection (and so a session lock) alive, but
its lease lapses.

Invariants:
- ``acquire`` succeeds only if there is no row or the lease has expired; taking over
  bumps ``epoch``. A refused acquire raises ``LeaseHeld`` naming the holder.
- The holder renews by heartbeat (``renew``), guarded by its epoch: a renewal that
  matches no row means another server took over (``LeaseLost``). A renewal after a
  pause that no one used to take over succeeds: the lease is still ours.
- ``fence(session)`` is the first statement of every write transaction the loop makes.
  It reads the row under the transaction's write lock (SQLite: BEGIN IMMEDIATE holds
  the database's; PostgreSQL: ``FOR UPDATE`` holds the row's until commit, so a
  takeover waits for it) and raises ``LeaseLost`` unless the epoch is ours, and
  ``LeaseLapsed`` if the lease has expired though nobody took it over yet. So a
  leader paused past its lease and then resumed writes nothing, and two leaders'
  writes never interleave.
- A standby (``wait_acquire``) only reads the row until the holder's expiry has passed,
  then tries to take it: it takes over within a poll (at most 1 s) of the lapse, and
  never holds SQLite's write lock while it waits.
- ``try_acquire`` remembers the row it replaced (``Lease.previous``: who held the lease
  before, and whether it ``released`` it on a clean stop; ``release`` sets
  ``renewed_at = expires_at``, which a live lease never has), so recovery can tell how
  the last server stopped (scheduler.loop.recovery).
- Times are the wall clock of the host (``now``), not the scheduler's injected job
  clock; servers sharing a PostgreSQL database need synchronised clocks (NTP), as
  any lease does.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scheduler.store.engine import READONLY_OPTION, StoreError
from scheduler.store.models import LeaderLease, utcnow

log = logging.getLogger("fairgpu.lease")

_T = LeaderLease.__table__
_C = _T.c
DEFAULT_TTL_S = 15.0


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    epoch: int
    since: datetime
    expires_at: datetime
    released: bool = False  # given up by a clean stop (`release`), not left to lapse

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} since {self.since:%Y-%m-%d %H:%M:%S} UTC"

    def alive_here(self, host: str | None = None) -> bool | None:
        """Whether the holder's process still runs, seen from `host` (this one's name by
        default): None on another host (nothing here can see it); else its pid exists and,
        where /proc says, that process started before it took the lease (a pid reused
        since, as in a restarted container, is not it)."""
        if self.host != (host or socket.gethostname()):
            return None
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, as another user
        started = process_started_at(self.pid)
        return started is None or started <= self.since.timestamp() + 1.0  # /proc's boot time is whole seconds


def process_started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from Linux's /proc; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command's name may hold spaces
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class LeaseHeld(StoreError):
    """Another server holds the lease; ``holder`` says which."""

    def __init__(self, holder: Holder | None):
        self.holder = holder
        who = holder.describe() if holder else "another server"
        super().__init__(f"the scheduler for this database is already running: {who}")


class LeaseLost(StoreError):
    """This server no longer holds the lease: another server took it over."""


class LeaseLapsed(LeaseLost):
    """This server's lease expired (it was paused, or the database was away) and nobody
    has taken it over yet: no write until a renewal succeeds."""


def current_holder(engine: Engine) -> Holder | None:
    with engine.execution_options(**{READONLY_OPTION: True}).connect() as conn:  # no write lock on SQLite
        row = conn.execute(sa.select(_T).where(_C.id == 1)).first()
    return holder_of(row)


def holder_of(row) -> Holder | None:
    """The holder a lease row names (a Core row or a LeaderLease); None for no row."""
    if row is None:
        return None
    return Holder(row.host, row.pid, row.epoch, _aware(row.acquired_at), _aware(row.expires_at),
                  released=_aware(row.expires_at) <= _aware(row.renewed_at))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Lease:
    """This server's claim on the lease (``epoch`` is None until acquired)."""

    def __init__(self, engine: Engine, *, ttl_s: float = DEFAULT_TTL_S, host: str | None = None,
                 pid: int | None = None, now: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.ttl = timedelta(seconds=ttl_s)
        self.host = host or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self.holder = f"{self.host}:{self.pid}"
        self.now = now
        self.epoch: int | None = None
        self.previous: Holder | None = None  # the holder this server took the lease from (None: nobody)
        self._postgres = engine.dialect.name == "postgresql"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking it ----------------------------------------------------------------------
    def try_acquire(self) -> int:
        """Take the lease if it is free or expired; returns the new epoch, or raises LeaseHeld."""
        now = self.now()
        values = dict(holder=self.holder, host=self.host, pid=self.pid, acquired_at=now, renewed_at=now,
                      expires_at=now + self.ttl)
        try:
            with self.engine.begin() as conn:
                if self._postgres:  # a holder inside a transaction has the row locked: don't wait long
                    conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                query = sa.select(_T).where(_C.id == 1)  # who held it (SQLite: BEGIN IMMEDIATE locks already)
                before = conn.execute(query.with_for_update() if self._postgres else query).first()
                epoch = conn.execute(
                    _T.update().where(_C.id == 1, _C.expires_at <= now)
                    .values(epoch=_C.epoch + 1, **values).returning(_C.epoch)
                ).scalar()
                if epoch is None:
                    row = conn.execute(sa.select(_T).where(_C.id == 1)).first()
                    if row is not None:
                        raise LeaseHeld(holder_of(row))
                    conn.execute(_T.insert().values(id=1, epoch=1, **values))
                    epoch = 1
        except LeaseHeld:
            raise
        except sa.exc.DBAPIError as exc:  # a racing insert, or the row locked past lock_timeout
            log.debug("lease acquire: %s", exc)
            raise LeaseHeld(current_holder(self.engine)) from None
        self.epoch = int(epoch)
        self.previous = holder_of(before)
        return self.epoch

    def wait_acquire(self, stop: threading.Event, poll_s: float | None = None,
                     on_wait: Callable[[Holder | None], None] | None = None,
                     while_waiting: Callable[[], None] | None = None) -> bool:
        """Standby: take the lease as soon as it lapses (True), or return False once `stop`
        is set. It reads the row (no write lock: a standby does not contend with the
        leader's writes) and tries to take it only once the holder's expiry has passed,
        sleeping until then but at most `poll_s` (a fifth of the ttl, at most 1 s) between
        reads. `on_wait` is called once, with the holder, when the lease is found held;
        `while_waiting` after each read that found it held (a hot standby keeps its caches
        warm there; what it raises is its own business)."""
        poll = poll_s if poll_s is not None else min(1.0, max(0.2, self.ttl.total_seconds() / 5))
        told = False
        while not stop.is_set():
            try:
                holder = current_holder(self.engine)
            except sa.exc.DBAPIError as exc:  # the database is away for a moment: read again
                log.debug("standby: reading the lease: %s", exc)
                stop.wait(poll)
                continue
            if holder is None or holder.expires_at <= self.now():
                try:
                    self.try_acquire()
                    return True
                except LeaseHeld as exc:  # renewed meanwhile, or another standby was first
                    holder = exc.holder
            if not told and on_wait is not None:
                on_wait(holder)
            told = True
            if while_waiting is not None:
                while_waiting()
            left = (holder.expires_at - self.now()).total_seconds() if holder is not None else poll
            stop.wait(min(poll, max(0.01, left + 0.01)))
        return False

    # -- keeping it ---------------------------------------------------------------------
    def _mine(self):
        if self.epoch is None:
            raise LeaseLost("this server never held the lease")
        return sa.and_(_C.id == 1, _C.epoch == self.epoch, _C.holder == self.holder)

    def renew(self) -> None:
        """Extend the lease by its ttl; LeaseLost if another server took it over."""
        now = self.now()
        with self.engine.begin() as conn:
            n = conn.execute(_T.update().where(self._mine()).values(renewed_at=now, expires_at=now + self.ttl)).rowcount
        if n != 1:
            raise LeaseLost(self._lost_message())

    def fence(self, session) -> None:
        """Inside a write transaction, before its first write: LeaseLost unless the lease
        is ours and current (see the module's invariants)."""
        conn = session.connection()
        query = sa.select(_C.epoch, _C.holder, _C.expires_at).where(_C.id == 1)
        if self._postgres:
            conn.execute(sa.text(f"SET LOCAL idle_in_transaction_session_timeout = "
                                 f"'{int(self.ttl.total_seconds() * 1000)}ms'"))
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None or row.epoch != self.epoch or row.holder != self.holder:
            raise LeaseLost(self._lost_message())
        if _aware(row.expires_at) <= self.now():
            raise LeaseLapsed("this server's lease lapsed (was it paused?); not writing until it is renewed")

    def _lost_message(self) -> str:
        holder = current_holder(self.engine)
        who = holder.describe() if holder else "nobody"
        return f"this server lost the scheduler lease (epoch {self.epoch}); it is now held by {who}"

    def start_heartbeat(self, on_lost: Callable[[LeaseLost], None], every_s: float | None = None) -> None:
        """Renew every `every_s` (a third of the ttl) in a thread; call `on_lost` once if
        another server took the lease over, then stop."""
        every = every_s if every_s is not None else self.ttl.total_seconds() / 3

        def beat() -> None:
            while not self._stop.wait(every):
                try:
                    self.renew()
                except LeaseLost as exc:
                    on_lost(exc)
                    return
                except Exception:  # the database is away for a moment: the lease may lapse
                    log.warning("could not renew the scheduler lease", exc_info=True)

        self._thread = threading.Thread(target=beat, name="fairgpu-lease", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Stop renewing (the lease was lost, or the server is going)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def release(self) -> None:
        """Give the lease up at once (clean shutdown), so a standby need not wait for it to lapse."""
        self.stop_heartbeat()
        if self.epoch is None:
            return
        try:
            with self.engine.begin() as conn:
                now = self.now()
                conn.execute(_T.update().where(self._mine()).values(expires_at=now, renewed_at=now))
        except Exception:
            log.warning("could not release the scheduler lease", exc_info=True)
