"""A real uvicorn server on loopback port 0, in a thread, over a seeded SQLite file.

The socket is bound (port 0: the kernel picks a free port) and listening before uvicorn
gets it, and the URL is built from the port it got: nothing picks a port to use later.

Seed: one node of 2 T4 GPUs x 4 slices; uni-a (an institution) with leaves
uni-a/vision and uni-a/nlp; uni-b (a leaf institution). Tokens: admin, a,
a_vision, b. The server uses the real clock: without the scheduling loop jobs stay
PENDING until cancelled.
"""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Live:
    url: str
    db_url: str
    engine: object
    tokens: dict[str, str] = field(default_factory=dict)
    server: object = None
    thread: threading.Thread | None = None

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.dispose()


def seed_tokens(engine) -> dict[str, str]:
    from scheduler.services import accounts, auth, capacity
    from scheduler.store import session_scope

    with session_scope(engine) as s:
        capacity.set_node(s, node="gpu-box-1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=now())
        accounts.add_account(s, "uni-a", weight=2)
        accounts.add_account(s, "uni-a/vision", weight=1, parent="uni-a")
        accounts.add_account(s, "uni-a/nlp", weight=1, parent="uni-a")
        accounts.add_account(s, "uni-b", weight=1)
    tokens = {}
    with session_scope(engine) as s:
        for role, account in (("admin", None), ("a", "uni-a"), ("a_vision", "uni-a/vision"), ("b", "uni-b")):
            tokens[role] = auth.issue_token(s, account=account, name=role, expires_s=None, at=now())
    return tokens


@contextmanager
def refused_url():
    """A loopback URL that refuses connections for as long as the block runs: its port is
    bound but not listening, so no other process can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def start(db_path: Path, seed=None, results_dir: Path | None = None, sandbox_status=None) -> Live:
    """Serve a fresh database at ``db_path``, seeded by ``seed(engine) -> tokens`` (default ``seed_tokens``);
    ``results_dir``: the jobs' directories (their logs), as ``fairgpu up`` passes it;
    ``sandbox_status``: whether script jobs are taken (``create_app``'s; None: not checked)."""
    import uvicorn

    from scheduler.api import create_app
    from scheduler.store import init_db, make_engine

    db_url = f"sqlite:///{db_path}"
    engine = make_engine(db_url)
    init_db(engine)
    tokens = (seed or seed_tokens)(engine)
    from scheduler.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(engine, clock=now, results_dir=str(results_dir) if results_dir is not None else None,
                     sandbox_status=sandbox_status)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fairgpu-test-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test API server did not start")
        time.sleep(0.02)
    return Live(f"http://127.0.0.1:{port}", db_url, engine, tokens, server, thread)
