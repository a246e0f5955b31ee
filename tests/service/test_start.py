"""How a server starts, without Ray: the API socket first (port 0 allowed, a busy port is
one line and exit 1 before anything else), a private state directory and database, then
the leader lease: refused while another server holds it, waited for with --standby, and
taken over from a crashed server on this host once its lease lapses."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from scheduler.server import Embedded, PortInUse, bind_socket, make_private
from scheduler.store import init_db, make_engine
from scheduler.store.lease import Lease, LeaseHeld
from service_helpers import FAIRGPU


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def up(*args: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([*FAIRGPU, "up", "--gpus", "1", *args], capture_output=True, text=True, timeout=timeout)
    return r, time.monotonic() - t0


def test_port_0_gives_a_real_port_and_a_busy_port_is_refused():
    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        with pytest.raises(PortInUse, match=rf"cannot listen on 127.0.0.1:{port}: Address already in use"):
            bind_socket("127.0.0.1", port)
    finally:
        sock.close()


def test_up_on_a_busy_port_is_one_line_and_exit_1_before_anything_starts(tmp_path):
    busy = bind_socket("127.0.0.1", 0)
    try:
        port = busy.getsockname()[1]
        r, took = up("--port", str(port), "--db", f"sqlite:///{tmp_path / 'fg.db'}",
                     "--state-dir", str(tmp_path / "state"))
    finally:
        busy.close()
    assert r.returncode == 1, r
    assert r.stderr.strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "fg.db").exists() and not (tmp_path / "state").exists()  # nor the lease, nor Ray
    assert took < 30


def test_the_state_directory_and_database_are_private(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    db = tmp_path / "data" / "fg.db"
    old = os.umask(0o022)
    try:
        make_private(state, f"sqlite:///{db}")
        engine = make_engine(f"sqlite:///{db}")
        init_db(engine)
        with engine.begin() as conn:  # the -wal and -shm files exist while a connection is open
            conn.execute(sa.text("SELECT 1"))
            assert mode(state) == 0o700 and mode(state / "results") == 0o700
            files = [db, db.with_name("fg.db-wal"), db.with_name("fg.db-shm")]
            assert all(p.exists() for p in files)
            assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
        engine.dispose()
    finally:
        os.umask(old)


# -- the lease, on SQLite and PostgreSQL ------------------------------------------------
def held_by_this_process(db_url: str, **kw) -> Lease:
    engine = make_engine(db_url)
    init_db(engine)
    lease = Lease(engine, **kw)
    lease.try_acquire()
    return lease


def store_only(db_url: str, tmp_path, **kw) -> Embedded:
    """An Embedded taken through steps 1-2 (socket, database): enough to try the lease."""
    server = Embedded(db_url=db_url, state_dir=tmp_path / "state", port=0, **kw)
    server.bind()
    server.open_store()
    return server


def test_a_second_server_exits_1_at_once_naming_the_holder(db_url, tmp_path):
    holder = held_by_this_process(db_url)
    try:
        r, took = up("--port", "0", "--db", db_url, "--state-dir", str(tmp_path / "state"))
    finally:
        holder.release()
        holder.engine.dispose()
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"already running: {socket.gethostname()} pid {os.getpid()} since " in lines[0]
    assert "--standby" in lines[0]
    assert took < 30


def test_a_standby_waits_then_takes_over_when_the_holder_releases(db_url, tmp_path):
    holder = held_by_this_process(db_url, ttl_s=30)
    said: list[str] = []
    waiting = threading.Event()

    def say(message: str) -> None:
        said.append(message)
        waiting.set()

    server = store_only(db_url, tmp_path, standby=True, lease_ttl_s=3, say=say)
    outcome: list[bool] = []
    t = threading.Thread(target=lambda: outcome.append(server.take_lease()))
    t.start()
    try:
        assert waiting.wait(30), "the standby said nothing"
        assert said[0].startswith(f"standing by: the scheduler for this database runs at {socket.gethostname()} "
                                  f"pid {os.getpid()} since ")
        assert t.is_alive()
        holder.release()
        t.join(30)
        assert outcome == [True] and server.lease.epoch == holder.epoch + 1
        assert said[1] == f"took over the scheduler lease (epoch {server.lease.epoch})"
    finally:
        server.stop()
        holder.engine.dispose()
        t.join(5)


def test_a_standby_stopped_while_waiting_starts_nothing(db_url, tmp_path):
    holder = held_by_this_process(db_url, ttl_s=30)
    waiting = threading.Event()
    server = store_only(db_url, tmp_path, standby=True, say=lambda m: waiting.set())
    outcome: list[bool] = []
    t = threading.Thread(target=lambda: outcome.append(server.take_lease()))
    t.start()
    try:
        assert waiting.wait(30)
        server.stop()
        t.join(30)
        assert outcome == [False] and server.ray is None
    finally:
        holder.release()
        holder.engine.dispose()


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_crashed_servers_lease_is_taken_once_it_lapses(db_url, tmp_path):
    crashed = held_by_this_process(db_url, ttl_s=2, pid=dead_pid())
    said: list[str] = []
    server = store_only(db_url, tmp_path, lease_ttl_s=2, say=said.append)
    try:
        assert server.take_lease()
        assert server.lease.epoch == crashed.epoch + 1
        assert len(said) == 1 and f"(pid {crashed.pid} on this host) is gone; taking over when its lease lapses" \
            in said[0]
    finally:
        server.stop()
        crashed.engine.dispose()


def test_a_live_holder_on_this_host_is_not_waited_for(db_url, tmp_path):
    holder = held_by_this_process(db_url, ttl_s=30)
    server = store_only(db_url, tmp_path, say=lambda m: pytest.fail(m))
    try:
        with pytest.raises(LeaseHeld, match=f"pid {os.getpid()} since"):
            server.take_lease()
    finally:
        server.stop()
        holder.release()
        holder.engine.dispose()
