"""A local Ray's session, recorded in the state directory, so that a server killed with
kill -9 leaves nothing behind once the next server starts on this host.

A server that starts a local Ray records it (`record`) in
`<state-dir>/ray-sessions/<host>-<pid>.json`, written aside and renamed into place: the
server's pid and start time, the database it schedules, Ray's session directory, and the
pid and start time of each process Ray started for it (GCS, raylet, ...). A start time is
field 22 of /proc/<pid>/stat, in clock ticks since boot: a pid with another start time is
another process. A clean stop shuts Ray down and removes the record (`forget`).

Before a server starts (`settle`, then again just before it starts its own Ray), it reads
every record of this host:
- its server still runs (same pid, same start time) on the same database: a leader this
  one stands by for, or took the lease from (fenced); left alone;
- its server still runs, on another database: `SessionInUse`, and this server refuses to
  start (both would write the same state directory's results);
- its server is gone: every live process of that session is killed (SIGKILL), then the
  record is removed. A process is the session's if it is one the record names (same pid,
  same start time), or its command line or one of its open files names the session
  directory (Ray's workers and agents rename themselves, but keep their logs there open),
  or its process group's leader or one of its ancestors is such a process. Never by a
  process's name (`ray stop` kills every Ray of the host by name).

Linux only (/proc); elsewhere nothing is recorded and nothing killed. Standard library only.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

DIRNAME = "ray-sessions"


class SessionInUse(RuntimeError):
    """A live Ray session of another server (on another database) uses this state directory."""


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (when the process started, in ticks since boot), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])  # the command's name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, ticks: int | None) -> bool:
    """Whether process `pid` runs and is the one that started at `ticks` (not a zombie)."""
    if ticks is None or start_ticks(pid) != ticks:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class Record:
    path: Path
    host: str
    pid: int
    ticks: int | None
    database: str
    session_dir: str
    processes: tuple[tuple[int, int], ...]  # (pid, start ticks) of the processes Ray started

    def owner_alive(self) -> bool:
        return alive(self.pid, self.ticks)

    def describe(self) -> str:
        return f"pid {self.pid} on this host, database {self.database}, Ray session {self.session_dir}"


def records_dir(state_dir: Path) -> Path:
    return Path(state_dir) / DIRNAME


def record(state_dir: Path, database: str, session_dir: str, processes: list[int]) -> Path | None:
    """Record this server's local Ray session (the module's docstring); None off Linux."""
    me = start_ticks(os.getpid())
    if me is None:
        return None
    folder = records_dir(state_dir)
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{socket.gethostname()}-{os.getpid()}.json"
    body = {"host": socket.gethostname(), "pid": os.getpid(), "ticks": me, "database": database,
            "session_dir": session_dir,
            "processes": [[p, t] for p in processes if (t := start_ticks(p)) is not None]}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def forget(path: Path | None) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)


def read(state_dir: Path) -> list[Record]:
    """This host's records in the state directory (unreadable ones are skipped)."""
    host, out = socket.gethostname(), []
    for path in sorted(records_dir(state_dir).glob("*.json")):
        try:
            d = json.loads(path.read_text())
            rec = Record(path, str(d["host"]), int(d["pid"]), d.get("ticks"), str(d["database"]),
                         str(d["session_dir"]), tuple((int(p), int(t)) for p, t in d.get("processes", ())))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if rec.host == host and rec.session_dir:
            out.append(rec)
    return out


def settle(state_dir: Path, database: str) -> list[Record]:
    """End what dead servers' Ray sessions left on this host; SessionInUse if a live server
    on another database recorded one here. Returns the records of dead sessions ended."""
    ended = []
    for rec in read(state_dir):
        if rec.pid == os.getpid() and rec.ticks == start_ticks(os.getpid()):
            continue  # this server's own
        if rec.owner_alive():
            if rec.database != database:
                raise SessionInUse(f"the state directory {state_dir} is in use by another fairgpu server "
                                   f"({rec.describe()}); stop it, or give this one another --state-dir")
            continue
        end_session(rec)
        forget(rec.path)
        ended.append(rec)
    return ended


def end_session(rec: Record, rounds: int = 5) -> int:
    """SIGKILL every live process of `rec`'s session (the module's docstring); returns how
    many were signalled."""
    n = 0
    for _ in range(rounds):
        pids = session_processes(rec.session_dir, rec.processes)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                n += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.05)
    return n


def _table() -> dict[int, tuple[int, int, str]]:
    """{pid: (ppid, pgid, state)} of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def names_dir(pid: int, session_dir: str) -> bool:
    """Whether process `pid`'s command line or one of its open files names `session_dir`."""
    prefix = session_dir.rstrip("/") + "/"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if session_dir.encode() in f.read():
                return True
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target == session_dir or target.startswith(prefix):
            return True
    return False


def session_processes(session_dir: str, recorded=()) -> set[int]:
    """The live processes of a session (the module's docstring), this one never."""
    table = _table()
    me = os.getpid()
    found = {p for p, t in recorded if p in table and start_ticks(p) == t}
    found |= {p for p in table if p != me and names_dir(p, session_dir)}
    grew = True
    while grew:  # the groups they lead, and their descendants
        more = {p for p, (ppid, pgid, _) in table.items() if p not in found and (ppid in found or pgid in found)}
        grew = bool(more)
        found |= more
    return {p for p in found if p != me and table.get(p, (0, 0, "Z"))[2] != "Z"}
