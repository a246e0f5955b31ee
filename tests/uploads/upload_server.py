"""A real API server in a process of its own (uvicorn on loopback port 0, a seeded SQLite
file, a results directory), so that a test can watch it from outside: its answers while an
upload is refused, and its memory (/proc/<pid>/status).

Seed: `lab` (allowed scripts) and `plain` (not), leaf institutions; tokens admin, lab,
plain. No scheduling loop and no Ray: only the API, which is what an upload reaches.
Run as a script it serves until killed, printing `serving <url>` once it listens.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

LINE = "serving "


def serve(db_path: str, results_dir: str, tokens_path: str) -> None:
    import uvicorn

    from scheduler.api import create_app
    from scheduler.server import bind_socket
    from scheduler.services import accounts, auth
    from scheduler.store import init_db, make_engine, session_scope, utcnow

    engine = make_engine(f"sqlite:///{db_path}")
    init_db(engine)
    with session_scope(engine) as s:
        accounts.add_account(s, "lab", weight=1, allow_scripts=True)
        accounts.add_account(s, "plain", weight=1)
    with session_scope(engine) as s:
        tokens = {role: auth.issue_token(s, account=account, name=role, expires_s=None, at=utcnow())
                  for role, account in (("admin", None), ("lab", "lab"), ("plain", "plain"))}
    Path(tokens_path).write_text(json.dumps(tokens))
    sock = bind_socket("127.0.0.1", 0)
    app = create_app(engine, clock=utcnow, results_dir=results_dir)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    print(f"{LINE}http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


class UploadServer:
    """`serve` in a subprocess; `client(role)` is an httpx client holding that role's token."""

    def __init__(self, tmp: Path) -> None:
        self.results = tmp / "results"
        tokens = tmp / "tokens.json"
        self.proc = subprocess.Popen([sys.executable, __file__, str(tmp / "fairgpu.db"), str(self.results),
                                      str(tokens)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = self.proc.stdout.readline()
        if not first.startswith(LINE):
            self.stop()
            raise RuntimeError(f"the upload test server did not start: {first}{self.proc.stdout.read()}")
        self.url = first[len(LINE):].strip()
        self.tokens = json.loads(tokens.read_text())
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep its pipe drained

    def client(self, role: str | None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """The server's resident memory now (VmRSS) or at its peak so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} for pid {self.proc.pid}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Poller:
    """GET /healthz every `every_s` seconds from a thread of its own (a fresh connection
    each time, as a monitor would); `latencies` holds each answer's time, `failures` any
    answer that was not a 200."""

    def __init__(self, url: str, every_s: float = 0.05) -> None:
        self.url, self.every_s = url, every_s
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-poller", daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        while not self.latencies and not self.failures:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                r = httpx.get(f"{self.url}/healthz", timeout=10)
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.monotonic() - started)
            self._stop.wait(self.every_s)

    @property
    def worst(self) -> float:
        return max(self.latencies)


if __name__ == "__main__":
    serve(*sys.argv[1:4])
