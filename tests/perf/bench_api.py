"""Benchmark of the API: sustained job submissions per second from concurrent clients.

Not a timed test. Run: `.venv/bin/python tests/perf/bench_api.py [--db URL] [--clients 8] [--jobs 4000]
[--client raw|httpx]`
(default: a fresh SQLite file; `--db postgres` makes a throwaway database on the
PostgreSQL server at 127.0.0.1:5432 and drops it afterwards).

Setup: a real uvicorn server in its own process (one worker, as `fairgpu up`
runs it) over a seeded database: one node of 8 T4 GPUs (32 slices), 2
institutions with 4 leaf projects each, every leaf with a pending limit (so the
limit check runs on every submission), one token per client. Each client has its own
keep-alive HTTP/1.1 connection and token, submits `hold` jobs to its own leaf, and waits
for each answer before it sends the next. A warm-up of 200 submissions is excluded.
Afterwards it checks that every accepted submission was stored exactly once: ids
unique, rows == accepted.

Clients (`--client`): `raw` (the default) drives all of them from one thread over raw
sockets: each request's bytes are built once, and an answer is read by its status line
and Content-Length only, so the clients cost far less CPU than the server they load
(both share the host's cores). `httpx`: a thread per client, each with an httpx
connection (the earlier load generator, kept for comparison).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _now() -> datetime:
    return datetime.now(UTC)


def seed(url: str, clients: int) -> list[str]:
    from scheduler.services import accounts, auth, capacity
    from scheduler.store import init_db, make_engine, session_scope

    engine = make_engine(url)
    init_db(engine)
    tokens = []
    with session_scope(engine) as s:
        capacity.set_node(s, node="bench", gpus=8, slices_per_gpu=4, gpu_type="T4", at=_now())
        for i in range(2):
            accounts.add_account(s, f"inst{i}", weight=i + 1, max_pending=10**6)
        for c in range(clients):
            accounts.add_account(s, f"inst{c % 2}/p{c}", weight=1, parent=f"inst{c % 2}", max_pending=10**6)
    with session_scope(engine) as s:
        for c in range(clients):
            tokens.append(auth.issue_token(s, account=f"inst{c % 2}/p{c}", name=f"bench{c}", expires_s=None,
                                           at=_now()))
    engine.dispose()
    return tokens


def serve(url: str, fd: int, switch_ms: float | None = None) -> None:
    """Serve the API on the listening socket inherited as `fd` (bound by the parent)."""
    if switch_ms is not None:
        sys.setswitchinterval(switch_ms / 1000)
    import uvicorn

    from scheduler.api import create_app
    from scheduler.store import make_engine

    app = create_app(make_engine(url), clock=_now)
    sock = socket.socket(fileno=fd)

    def batches() -> None:  # at shutdown (uvicorn re-raises SIGTERM after it), warm-up included
        committer = app.state.committer
        print(f"committer: {committer.pieces} submissions in {committer.batches} batches "
              f"({committer.pieces / max(1, committer.batches):.1f} a batch)", file=sys.stderr)

    app.router.on_shutdown.append(batches)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def start_server(url: str, switch_ms: float | None = None) -> tuple[subprocess.Popen, str]:
    """The server process, on a loopback socket bound here (port 0) and handed down: the
    port is the server's from the start, nothing else can take it meanwhile."""
    import httpx

    from scheduler.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--db", url, "--fd", str(sock.fileno()),
                             *(["--switch-interval-ms", str(switch_ms)] if switch_ms else [])],
                            cwd=ROOT, pass_fds=[sock.fileno()])
    sock.close()  # the child holds it now
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
    proc.kill()
    raise SystemExit("server did not start in 30 s")


BODY = {"model": "hold", "slices": 1, "seconds": 1}


def client_loop(base: str, token: str, n: int, ids: list, latencies: list, errors: list, go: threading.Event):
    """One httpx client (``--client httpx``): a thread with its own keep-alive connection."""
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        go.wait()
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                r = http.post("/v1/jobs", json=BODY)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t0)
            if r.status_code == 201:
                ids.append(r.json()["id"])
            else:
                errors.append(f"{r.status_code} {r.text}")


class RawClient:
    """One client of ``--client raw``: a keep-alive connection of its own, its request's
    bytes built once, one request in flight. ``feed`` takes what the socket gave and
    returns the (status, body) of each whole answer in it; an answer is read by its
    status line and Content-Length alone (the server always sends one)."""

    def __init__(self, host: str, port: int, token: str, n: int):
        body = json.dumps(BODY).encode()
        self.request = (f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.left = n
        self.buf = b""
        self.sent_at = 0.0

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.sock.sendall(self.request)
        self.left -= 1

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return out
            head = self.buf[:head_end].lower()
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"an answer without Content-Length: {self.buf[:200]!r}")
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17:line_end if line_end > 0 else len(head)])
            end = head_end + 4 + length
            if len(self.buf) < end:
                return out
            out.append((int(self.buf[9:12]), self.buf[head_end + 4:end]))
            self.buf = self.buf[end:]


def raw_clients(base: str, tokens: list[str], n: int, ids: list, latencies: list, errors: list,
                go: threading.Event) -> None:
    """``--client raw``: every client from this one thread, through a selector."""
    import selectors
    from urllib.parse import urlsplit

    where = urlsplit(base)
    clients = [RawClient(where.hostname, where.port, t, n) for t in tokens]
    sel = selectors.DefaultSelector()
    for c in clients:
        sel.register(c.sock, selectors.EVENT_READ, c)
    go.wait()
    for c in clients:
        c.send()
    active = len(clients)
    while active:
        ready = sel.select(timeout=30)
        if not ready:  # as httpx's timeout: a server that stops answering ends the run with an error
            errors.append(f"no answer in 30 s on {active} connections")
            break
        for key, _ in ready:
            c = key.data
            data = c.sock.recv(65536)
            if not data:
                errors.append("the server closed a connection")
                sel.unregister(c.sock)
                active -= 1
                continue
            for status, body in c.feed(data):
                latencies.append(time.perf_counter() - c.sent_at)
                if status == 201:
                    ids.append(json.loads(body)["id"])
                else:
                    errors.append(f"{status} {body.decode(errors='replace')}")
                if c.left:
                    c.send()
                else:
                    sel.unregister(c.sock)
                    active -= 1
    sel.close()
    for c in clients:
        c.sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst(base: str, tokens: list[str], per_client: int, server_pid: int, client: str = "raw") -> dict:
    ids, lat, errors = [], [], []
    go = threading.Event()
    if client == "raw":
        threads = [threading.Thread(target=raw_clients, args=(base, tokens, per_client, ids, lat, errors, go))]
    else:
        threads = [threading.Thread(target=client_loop, args=(base, t, per_client, ids, lat, errors, go))
                   for t in tokens]
    for t in threads:
        t.start()
    time.sleep(0.2)  # connections built before the clock starts
    cpu0, t0, own0 = cpu_seconds(server_pid), time.perf_counter(), cpu_seconds(os.getpid())
    load0 = os.getloadavg()[0]
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server_cpu = cpu_seconds(server_pid) - cpu0
    client_cpu = cpu_seconds(os.getpid()) - own0
    from workloads.measure import percentile

    return {"accepted": len(ids), "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": wall, "per_s": len(ids) / wall, "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "server_cpu_ms_per_submit": server_cpu / max(1, len(ids)) * 1e3,
            "client_cpu_ms_per_submit": client_cpu / max(1, len(ids)) * 1e3, "load_avg_1m_before": load0,
            "load_avg_1m": os.getloadavg()[0], "ids": ids}


def stored(url: str) -> tuple[int, int]:
    import sqlalchemy as sa

    from scheduler.store import make_engine

    engine = make_engine(url)
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT count(*), count(DISTINCT id) FROM job")).one()
    engine.dispose()
    return rows[0], rows[1]


def run(url: str, clients: int, jobs: int, warmup: int = 200, switch_ms: float | None = None,
        client: str = "raw") -> dict:
    tokens = seed(url, clients)
    proc, base = start_server(url, switch_ms)
    try:
        burst(base, tokens, max(1, warmup // clients), proc.pid, client)
        result = burst(base, tokens, jobs // clients, proc.pid, client)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    total, distinct = stored(url)
    expected = result["accepted"] + clients * max(1, warmup // clients)
    ids = result.pop("ids")
    result.update(backend=url.split(":", 1)[0], client=client, clients=clients, rows=total, distinct_ids=distinct,
                  exactly_once=(total == expected == distinct and len(set(ids)) == len(ids)))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=None, help="sqlite:///PATH, a PostgreSQL URL, or 'postgres' (throwaway db)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=4000)
    ap.add_argument("--client", choices=["raw", "httpx"], default="raw",
                    help="raw: every client from one thread over raw sockets (the default, cheap); "
                         "httpx: a thread and an httpx connection per client")
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="the server's thread switch interval (default: Python's, 5 ms)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fd", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.db, args.fd, args.switch_interval_ms)
        return
    cleanup = None
    if args.db is None:
        tmp = tempfile.mkdtemp(prefix="fairgpu-bench-")
        url = f"sqlite:///{tmp}/bench.db"
    elif args.db == "postgres":
        import sqlalchemy as sa

        name = f"fairgpu_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name

        def cleanup():
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        url = args.db
    try:
        result = run(url, args.clients, args.jobs, switch_ms=args.switch_interval_ms,
                     client=args.client)
    finally:
        if cleanup:
            cleanup()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['backend']} ({result['client']} clients): {result['accepted']} submissions from {result['clients']} clients in "
              f"{result['wall_s']:.2f} s = {result['per_s']:.0f}/s (p50 {result['p50_ms']:.1f} ms, "
              f"p99 {result['p99_ms']:.1f} ms; CPU per submit: server {result['server_cpu_ms_per_submit']:.2f} ms, "
              f"clients {result['client_cpu_ms_per_submit']:.2f} ms; load {result['load_avg_1m']:.1f}); errors {result['errors']}; rows {result['rows']}, "
              f"distinct ids {result['distinct_ids']}, exactly once: {result['exactly_once']}")
        if result["first_error"]:
            print("first error:", result["first_error"])
    if not result["exactly_once"] or result["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
