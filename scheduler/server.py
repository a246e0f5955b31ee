"""The embedded server: everything one machine needs, in one process.

`Embedded` wires the pieces and owns their lifecycle: the database (SQLite file by
default, or PostgreSQL), Ray (a local instance with logical GPUs, or an existing
cluster), the scheduling loop in a thread, the HTTP API with /metrics, and the NVML
samplers. `fairgpu up` runs it in the foreground; `fairgpu demo` and the tests run it
in the background.

Invariants: on start, jobs a crashed server left RUNNING are settled (finished if their
result file is there, else queued again); on stop (SIGTERM, Ctrl-C), running jobs are
requeued, never lost. The admin token is written once, at first start, to a file only
its owner can read.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from scheduler.services.capacity import slices_per_gpu_for

log = logging.getLogger("fairgpu.server")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def default_state_dir() -> Path:
    import platformdirs

    return Path(os.environ.get("FAIRGPU_STATE_DIR") or platformdirs.user_data_dir("fairgpu"))


@dataclass
class Embedded:
    db_url: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    ray_address: str | None = None
    gpus: int | None = None  # logical GPUs for a local Ray (CPU-only machines)
    gpu_type: str = "T4"
    slices_per_gpu: int | None = None
    host: str = "127.0.0.1"
    port: int = 8470
    clock: Callable[[], datetime] = utcnow
    period_s: float = 1.0
    usage_period_s: float = 15.0
    retry_limit: int = 3
    nvml_module: str | None = None
    warm_up: bool = True

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self._threads: list[threading.Thread] = []
        self.uvicorn = None
        self.ray = None

    # -- start ----------------------------------------------------------------------
    def start_core(self) -> None:
        """Database, Ray, executor, loop (not yet running), metrics; recovers state."""
        import ray

        from scheduler.executor import RayExecutor, init_ray
        from scheduler.loop import SchedulingLoop
        from scheduler.metrics.exporter import build_registry
        from scheduler.publish import Publisher
        from scheduler.services.auth import ensure_admin_token
        from scheduler.store import default_db_url, init_db, make_engine, session_scope

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = self.db_url or default_db_url()
        self.engine = make_engine(self.db_url)
        init_db(self.engine)
        with session_scope(self.engine) as s:
            self.admin_token = ensure_admin_token(s, self.admin_token_path, self.clock())
        self.ray = ray
        local_cpus = None
        if not self.ray_address:
            spg = self.slices_per_gpu or slices_per_gpu_for(self.gpu_type)
            local_cpus = max(os.cpu_count() or 1, (self.gpus or 0) * spg)
        init_ray(ray, address=self.ray_address, gpus=self.gpus, gpu_type=self.gpu_type, num_cpus=local_cpus)
        self.executor = RayExecutor(ray, str(self.state_dir / "results"))
        self.registry, self.metrics = build_registry(lambda: self.publisher.view())
        self.samplers = self._start_samplers()
        self.publisher = Publisher(self.engine, self.metrics, gpu_source=self._gpu_source,
                                   pending_source=self.executor.pending_in_ray).start()
        self.loop = SchedulingLoop(self.engine, self.executor, self.clock, slices_per_gpu=self.slices_per_gpu,
                                   retry_limit=self.retry_limit, usage_period_s=self.usage_period_s,
                                   on_cycle=self.publisher.publish)
        self.recovered = self.loop.recover()
        self.loop.refresh_capacity(self.clock())
        if self.warm_up and not self.ray_address and self.gpus:
            spg = self.slices_per_gpu or slices_per_gpu_for(self.gpu_type)
            self.executor.warm_up(min(64, self.gpus * spg), 1.0 / spg)

    @property
    def admin_token_path(self) -> Path:
        return self.state_dir / "admin.token"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _start_samplers(self):
        try:
            from scheduler.metrics.sampler import start_samplers

            return start_samplers(self.ray, self.nvml_module)
        except Exception:
            log.exception("could not start NVML samplers")
            return {}

    def _gpu_source(self):
        from scheduler.metrics.sampler import collect, gpu_views, nvml_nodes

        reports = collect(self.ray, self.samplers)
        return gpu_views(reports), nvml_nodes(reports)

    def make_app(self):
        from starlette.responses import Response
        from starlette.routing import Route

        from scheduler.api import create_app
        from scheduler.metrics.exporter import render

        def metrics(_request) -> Response:
            body, ctype = render(self.registry)
            return Response(content=body, media_type=ctype)

        return create_app(self.engine, clock=self.clock, on_change=self.loop.wake,
                          extra_routes=[Route("/metrics", metrics, methods=["GET"])])

    def start_loop(self) -> None:
        t = threading.Thread(target=self.loop.run, kwargs={"period_s": self.period_s}, name="fairgpu-loop",
                             daemon=True)
        t.start()
        self._threads.append(t)

    def make_server(self, install_signal_handlers: bool):
        import uvicorn

        config = uvicorn.Config(self.make_app(), host=self.host, port=self.port, log_level="warning",
                                access_log=False)
        server = uvicorn.Server(config)
        if not install_signal_handlers:
            server.install_signal_handlers = lambda: None  # the caller's thread owns signals
        self.uvicorn = server
        return server

    def start_background(self, timeout: float = 60.0) -> "Embedded":
        """Start everything, the HTTP server in a thread; returns once it answers."""
        import time

        self.start_core()
        self.start_loop()
        server = self.make_server(install_signal_handlers=False)
        t = threading.Thread(target=server.run, name="fairgpu-http", daemon=True)
        t.start()
        self._threads.append(t)
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not t.is_alive():
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.05)
        return self

    def serve_foreground(self, announce: Callable[["Embedded"], None] | None = None) -> int:
        """`fairgpu up`: serve until SIGTERM or Ctrl-C, then stop cleanly. `announce` is
        called once the core is up (recovered, capacity known), before the loop starts.
        Returns how many running jobs were queued again on the way out."""
        self.start_core()
        if announce is not None:
            announce(self)
        self.start_loop()
        try:
            self.make_server(install_signal_handlers=True).run()
        finally:
            requeued = self.stop()
        return requeued

    # -- stop -----------------------------------------------------------------------
    def stop(self) -> int:
        """Stop serving and scheduling; requeue running jobs. Returns how many were requeued."""
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        loop = getattr(self, "loop", None)
        requeued = 0
        if getattr(self, "publisher", None) is not None:
            self.publisher.stop()
        if loop is not None:
            loop.stop()
            for t in self._threads:
                if t.name == "fairgpu-loop":
                    t.join(timeout=30)
            requeued = loop.drain()
        for t in self._threads:
            if t.name == "fairgpu-http":
                t.join(timeout=10)
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()
        if getattr(self, "engine", None) is not None:
            self.engine.dispose()
        return requeued
