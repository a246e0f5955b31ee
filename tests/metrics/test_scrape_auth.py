"""A real Prometheus with the shipped scrape config gets every series through its token file;
the same target scraped without a token gives the cluster-wide series only (docs/metrics.md)."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import pytest
import yaml

from metrics_fixtures import contended_view
from prom_harness import DEPLOYED_CONFIG, Prometheus

pytestmark = pytest.mark.slow


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def server(tmp_path):
    """The API with /metrics (a contended view) over a SQLite file, and a scrape token."""
    import uvicorn

    from scheduler.api import create_app, metrics_route
    from scheduler.metrics.exporter import build_registry
    from scheduler.services import auth
    from scheduler.store import init_db, make_engine, session_scope

    engine = make_engine(f"sqlite:///{tmp_path / 'fg.db'}")
    init_db(engine)
    with session_scope(engine) as s:
        token = auth.issue_token(s, account=None, name="prometheus", expires_s=None, at=now(), scope=auth.SCRAPE)
    view = contended_view(time.time())
    registry, _ = build_registry(lambda: view)
    from scheduler.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)  # bound before the server starts: port 0, read back
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(engine, clock=now, extra_routes=[metrics_route(registry)]),
                                        log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "test server did not start"
        time.sleep(0.02)
    yield f"127.0.0.1:{port}", token
    srv.should_exit = True
    thread.join(10)
    engine.dispose()


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["data"]["result"]


def test_the_shipped_config_scrapes_every_series_with_its_token_file(prometheus_bin, server, tmp_path):
    target, token = server
    (tmp_path / "token").write_text(token + "\n")  # as `token issue --scrape > file` writes it
    job = next(j for j in yaml.safe_load(DEPLOYED_CONFIG.read_text())["scrape_configs"] if j["job_name"] == "fairgpu")
    job = {**job, "static_configs": [{"targets": [target]}],
           "authorization": {**job["authorization"], "credentials_file": str(tmp_path / "token")}}
    anonymous = {k: v for k, v in job.items() if k != "authorization"} | {"job_name": "anonymous"}
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": [job, anonymous]}
    prom = Prometheus(prometheus_bin, target, tmp_path / "prometheus", config=config).start(timeout_s=30)
    port = prom.port
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                up = {r["metric"]["job"]: r["value"][1] for r in query(port, "up")}
                if up == {"fairgpu": "1", "anonymous": "1"} and query(port, "fairgpu_capacity_slices"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not scrape both jobs"
            time.sleep(0.25)
        with_account = query(port, 'count by (job) ({__name__=~"fairgpu_account_.+"})')
        assert [r["metric"]["job"] for r in with_account] == ["fairgpu"]
        weights = query(port, "fairgpu_account_weight")
        assert {r["metric"]["account"] for r in weights} == {"inst-a", "inst-b", "inst-c"}
        assert sorted(r["metric"]["job"] for r in query(port, "fairgpu_capacity_slices")) == ["anonymous", "fairgpu"]
        assert sorted(r["metric"]["job"] for r in query(port, "fairgpu_schedule_cycle_failures_total")) == [
            "anonymous", "fairgpu"]
    finally:
        prom.stop()
