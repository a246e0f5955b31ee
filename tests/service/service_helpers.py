"""Helpers for service tests: a real embedded server (SQLite, local Ray with logical
GPUs), `fairgpu up` in a subprocess (`Up`), accounts and tokens through the services,
waiting on job states, and the sockets a process tree listens on.

Servers bind port 0 and are asked for the port they got (`Embedded.port`, or the
address `fairgpu up` prints once it serves): nothing picks a free port to start on later."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from scheduler.server import Embedded
from scheduler.services.accounts import add_account
from scheduler.services.auth import issue_token
from scheduler.store import session_scope
from scheduler.vocab import FINAL_STATES

FINAL = {s.value for s in FINAL_STATES}


def start_server(tmp: Path, **kw) -> Embedded:
    kw.setdefault("gpus", 2)
    server = Embedded(db_url=f"sqlite:///{tmp / 'fairgpu.db'}", state_dir=tmp, port=0,
                      usage_period_s=1.0, period_s=0.5, **kw)
    return server.start_background()


def account(server: Embedded, name: str, weight: float = 1.0, **kw) -> httpx.Client:
    """Create an institution and return an API client holding its token."""
    with session_scope(server.engine) as s:
        add_account(s, name, weight=weight, **kw)
    with session_scope(server.engine) as s:
        token = issue_token(s, account=name, name="test", expires_s=None, at=server.clock())
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def submit(client: httpx.Client, n: int = 1, **body) -> list[int]:
    body.setdefault("model", "hold")
    body.setdefault("slices", 1)
    ids = []
    for _ in range(n):
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def jobs(client: httpx.Client) -> dict[int, dict]:
    r = client.get("/v1/jobs", params={"all": "true"})
    assert r.status_code == 200, r.text
    return {j["id"]: j for j in r.json()}


def wait_for(predicate, timeout: float = 90.0, interval: float = 0.25, what: str = "condition", show=None):
    """Poll `predicate` until it returns something true (returned); on timeout, fail
    saying `what`, and what `show()` returns (the state that was not reached)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    seen = f"; last seen: {show()}" if show is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{seen}")


def wait_states(client: httpx.Client, ids, states=FINAL, timeout: float = 120.0) -> dict[int, dict]:
    ids = set(ids)

    def done():
        js = jobs(client)
        return js if all(js[i]["state"] in states for i in ids) else None

    return wait_for(done, timeout, what=f"jobs {sorted(ids)[:5]}... to reach {sorted(states)}")


# -- `fairgpu up` in a subprocess --------------------------------------------------------
FAIRGPU = [sys.executable, "-m", "scheduler.cli"]
UP_LINE = re.compile(r"fairgpu is up: API (http://\S+)")


class Up:
    """`fairgpu up --port 0` in its own process group. Its output (stderr and stdout) is
    read line by line in a thread, so a test waits for what the server says (`wait_line`)
    rather than for a guessed time; `url` is the address it printed once it served."""

    def __init__(self, db_url: str, state_dir: Path, *args: str, gpus: int = 1, user: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.cmd = [*FAIRGPU, "up", "--db", db_url, "--state-dir", str(state_dir), "--port", "0",
                    "--gpus", str(gpus), *args]
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self.url: str | None = None
        as_user = {"user": user, "group": _group_of(user), "extra_groups": []} if user else {}
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                     **as_user)
        self._reader = threading.Thread(target=self._read, name=f"up-{self.proc.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float = 90.0, start: int = 0) -> re.Match:
        """The first line from `start` on that matches `pattern` (re.search), as it is printed."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "exited" if self._eof else f"said nothing like it in {timeout:.0f} s"
                    raise AssertionError(f"`fairgpu up` (pid {self.pid}) {why}, waiting for /{pattern}/:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(left)

    def wait_up(self, timeout: float = 120.0) -> str:
        self.url = self.wait_line(UP_LINE.pattern, timeout).group(1)
        return self.url

    def wait_exit(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop_until_taken_over(self, standby: "Up", ttl: float, epoch: int = 2) -> float:
        """SIGSTOP this leader until `standby` takes the lease over; returns the time.time()
        of the stop that it took over after. On SQLite a leader stopped inside a write
        transaction keeps the database locked, and nobody can take over until it resumes
        (docs/deploy.md); so on the rare stop that lands there, resume and stop it again
        (PostgreSQL ends such a transaction after the ttl)."""
        for attempt in range(3):
            stopped = time.time()
            self.signal(signal.SIGSTOP)
            try:
                standby.wait_line(rf"^took over the scheduler lease \(epoch {epoch}\)$", timeout=4 * ttl + 10)
                return stopped
            except AssertionError:
                if attempt == 2:
                    raise
                self.signal(signal.SIGCONT)
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL the whole group (the server and its local Ray); SIGCONT first if stopped."""
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        self.proc.wait(30)
        self._reader.join(10)


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def admin_client(url: str, state_dir: Path) -> httpx.Client:
    token = (Path(state_dir) / "admin.token").read_text().strip()
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def institution(admin: httpx.Client, name: str, url: str | None = None) -> httpx.Client:
    """Create an institution through the admin API; a client holding its new token (for
    `url`, default the admin's server)."""
    r = admin.post("/v1/admin/accounts", json={"name": name, "weight": 1})
    assert r.status_code in (200, 201), r.text
    r = admin.post("/v1/admin/tokens", json={"account": name})
    assert r.status_code in (200, 201), r.text
    return httpx.Client(base_url=url or str(admin.base_url), timeout=30,
                        headers={"Authorization": f"Bearer {r.json()['token']}"})


# -- listening sockets of a process tree (Linux /proc; no psutil) ------------------------
def descendants(root: int) -> dict[int, str]:
    """{pid: command name} of `root` and every process below it."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents[int(entry)], names[int(entry)] = ppid, name
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parents.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return {pid: names.get(pid, "?") for pid in tree}


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """{socket inode: (address, port)} of every TCP socket in LISTEN, IPv4 and IPv6."""
    import ipaddress

    out = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] != "0A":  # LISTEN
                continue
            hexaddr, hexport = cols[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # the kernel prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ipaddress.ip_address(raw)
            if width == 32 and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            out[int(cols[9])] = (str(addr), int(hexport, 16))
    return out


def listening_sockets(root: int) -> list[tuple[int, str, str, int]]:
    """(pid, command, address, port) of every TCP socket that `root` or a process below
    it listens on."""
    inodes = _listening_inodes()
    found = []
    for pid, name in descendants(root).items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in inodes:
                    found.append((pid, name, *inodes[inode]))
    return sorted(set(found))
