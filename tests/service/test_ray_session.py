"""No orphans: a server's local Ray ends when the server ends, however it ends
(scheduler.runtime.ray_session). A server killed with kill -9 leaves its Ray's agents and workers
behind; the next `fairgpu up` on the host ends them, found from the record in the state
directory (the recorded pids with their start times, and the processes whose command line
or open files name the session directory), never by a process's name. A live server on
another database that recorded its Ray in the same state directory is a refusal.

The first tests use stand-in processes (no Ray); the last kills a real `fairgpu up` three
times with restarts in between."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from service_helpers import FAIRGPU, Up, admin_client, institution, wait_for

from scheduler.runtime import ray_session
from scheduler.runtime.jobfiles import started_path
from scheduler.store import init_db, make_engine
from scheduler.store.lease import Lease


def dead_pid() -> tuple[int, int]:
    """(pid, start ticks) of a process that has exited: a server killed with kill -9."""
    proc = subprocess.Popen(["sleep", "0"])
    ticks = ray_session.start_ticks(proc.pid)
    proc.wait()
    return proc.pid, ticks or 1


def write_record(state: Path, pid: int, ticks: int, database: str, session_dir: Path, processes=()) -> Path:
    folder = ray_session.records_dir(state)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{socket.gethostname()}-{pid}.json"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "ticks": ticks, "database": database,
                                "session_dir": str(session_dir), "processes": [list(p) for p in processes]}))
    return path


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def leftovers(tmp_path):
    """A dead server's session as kill -9 leaves it: a recorded process (its "GCS"), an
    "agent" renamed by Ray but holding a log open in the session directory, and a "worker"
    child of the agent; plus a bystander with nothing of the session."""
    session = tmp_path / "ray" / "session_x"
    (session / "logs").mkdir(parents=True)
    procs = []

    def spawn(*cmd: str, **kw) -> subprocess.Popen:
        procs.append(subprocess.Popen(cmd, start_new_session=True, **kw))
        return procs[-1]

    gcs = spawn("sleep", "600")
    with open(session / "logs" / "agent.out", "w") as log:
        agent = spawn("sh", "-c", "sleep 600 & wait", stdout=log)
    bystander = spawn("sleep", "600")
    yield session, gcs, agent, bystander
    for p in procs:
        p.kill()
        p.wait()
    # the agent's sleep, if anything went wrong
    for pid in ray_session.session_processes(str(session)):
        os.kill(pid, signal.SIGKILL)


def test_a_dead_servers_session_is_ended_and_nothing_else(tmp_path, leftovers):
    session, gcs, agent, bystander = leftovers
    state = tmp_path / "state"
    owner, ticks = dead_pid()
    db = f"sqlite:///{tmp_path / 'fg.db'}"
    path = write_record(state, owner, ticks, db, session, [(gcs.pid, ray_session.start_ticks(gcs.pid))])
    recorded = [(gcs.pid, ray_session.start_ticks(gcs.pid))]

    def all_three():
        found = ray_session.session_processes(str(session), recorded)
        return found if len(found) == 3 else None

    found = wait_for(all_three, timeout=10, what="the agent's child to start")
    assert gcs.pid in found and agent.pid in found  # and the agent's child
    assert bystander.pid not in found

    ended = ray_session.settle(state, db)
    assert [r.pid for r in ended] == [owner] and not path.exists()
    for p in (gcs, agent):
        p.wait(10)
    assert not {p for p in found if alive(p)}
    assert alive(bystander.pid)


def test_a_recorded_pid_with_another_start_time_is_another_process(tmp_path, leftovers):
    _session, gcs, _agent, _bystander = leftovers
    owner, ticks = dead_pid()
    elsewhere = tmp_path / "ray" / "session_elsewhere"  # named by no process
    write_record(tmp_path / "state", owner, ticks, "db", elsewhere, [(gcs.pid, ray_session.start_ticks(gcs.pid) - 1)])
    assert len(ray_session.settle(tmp_path / "state", "db")) == 1
    assert alive(gcs.pid)  # a reused pid is not the session's


def test_a_live_servers_session_is_left_alone_on_its_database_and_refused_on_another(tmp_path, leftovers):
    session, gcs, _agent, _bystander = leftovers
    state = tmp_path / "state"
    me = ray_session.start_ticks(os.getpid())
    other = write_record(state, gcs.pid, ray_session.start_ticks(gcs.pid), "sqlite:///a.db", session)
    assert ray_session.settle(state, "sqlite:///a.db") == []  # a leader this server stands by for
    assert other.exists() and alive(gcs.pid)
    with pytest.raises(ray_session.SessionInUse, match=rf"in use by another fairgpu server \(pid {gcs.pid} on this "
                       rf"host, database sqlite:///a.db, Ray session {session}\); stop it, or give this one another "
                       r"--state-dir"):
        ray_session.settle(state, "sqlite:///b.db")
    assert alive(gcs.pid)
    write_record(state, os.getpid(), me, "sqlite:///b.db", session)  # its own record: never its own victim
    other.unlink()
    assert ray_session.settle(state, "sqlite:///b.db") == [] and alive(gcs.pid)


def test_up_refuses_a_state_directory_whose_ray_a_live_server_on_another_database_owns(tmp_path):
    state = tmp_path / "state"
    session = tmp_path / "ray" / "session_live"
    write_record(state, os.getpid(), ray_session.start_ticks(os.getpid()), "sqlite:///elsewhere.db", session)
    r = subprocess.run([*FAIRGPU, "up", "--gpus", "1", "--port", "0", "--db", f"sqlite:///{tmp_path / 'fg.db'}",
                        "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r
    assert r.stderr.strip() == (f"Error: the state directory {state} is in use by another fairgpu server (pid "
                                f"{os.getpid()} on this host, database sqlite:///elsewhere.db, Ray session {session}); "
                                "stop it, or give this one another --state-dir")
    engine = make_engine(f"sqlite:///{tmp_path / 'fg.db'}")  # it took no lease
    init_db(engine)
    assert Lease(engine).try_acquire() == 1
    engine.dispose()


# -- a real `fairgpu up`, killed five times ------------------------------------------------
def session_left(record: dict, server_pid: int) -> dict[int, str]:
    """{pid: how found} of every live process of a dead server's session: a recorded pid with
    its start time, the server's own session id (`Up` starts it in a new session), or a
    command line or open file that names the session directory."""
    out = {}
    for pid, ticks in record["processes"]:
        if ray_session.start_ticks(pid) == ticks and alive(pid):
            out[pid] = "recorded"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not alive(int(entry)):
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat") as f:
                sid = int(f.read().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if sid == server_pid:
            out.setdefault(pid, "its session id")
        elif ray_session.names_dir(pid, record["session_dir"]):
            out.setdefault(pid, "names the session directory")
    return out


@pytest.mark.slow
def test_kill_9_of_fairgpu_up_five_times_leaves_no_process_of_a_dead_session(tmp_path):
    db = f"sqlite:///{tmp_path / 'fg.db'}"
    ups = [Up(db, tmp_path, "--lease-ttl", "1")]
    dead: list[tuple[dict, int]] = []
    try:
        base = ups[0].wait_up()
        user = institution(admin_client(base, tmp_path), "lab")
        job_id = user.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 600}).json()["id"]
        wait_for(lambda: started_path(tmp_path / "results", job_id, 1).exists(), timeout=60,
                 what="the job's task to start (a busy Ray worker)")
        for round_ in range(5):  # issue 23: kill -9 x5 with restarts in between
            up = ups[-1]
            (path,) = ray_session.records_dir(tmp_path).glob(f"*-{up.pid}.json")
            record = json.loads(path.read_text())
            assert record["processes"] and Path(record["session_dir"]).is_dir()
            os.kill(up.pid, signal.SIGKILL)  # the server only, not its group: its Ray is orphaned
            up.proc.wait(30)
            if round_ == 0:  # what kill -9 leaves (Ray's agents outlive its raylet)
                time.sleep(1.0)
                assert session_left(record, up.pid), "kill -9 left nothing behind: the test proves nothing"
            dead.append((record, up.pid))
            ups.append(Up(db, tmp_path, "--lease-ttl", "1"))
            ups[-1].wait_up()
            ups[-1].wait_line(rf"ended what was left of a dead server's Ray on this host \(pid {up.pid}, session ",
                              timeout=5)
            left = {pid: how for record, server in dead for pid, how in session_left(record, server).items()}
            assert not left, f"round {round_ + 1}: processes of dead sessions still alive: {left}"
            assert not path.exists()
    finally:
        for up in ups:
            up.kill()
