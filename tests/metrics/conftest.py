"""Fixtures for the metrics tests.

- `promtool` / `prometheus`: paths of Debian's binaries (deploy/install-prometheus.sh).
  Missing binaries skip visibly, except when CI is set: then the test fails.
- `scrape_target`: host:port of a /metrics endpoint under contended load. By default
  an in-process exporter fed by ContendedRun; set FAIRGPU_E2E_TARGET=host:port to
  point the end-to-end tests at a running `fairgpu up` instead (FAIRGPU_E2E_SCRAPES:
  how many scrapes to wait for first; default 20 there, 3 in-process) (or override the
  fixture in a conftest closer to the test).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[2]


def need_binary(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    message = f"`{name}` is not installed; run deploy/install-prometheus.sh (Debian's prometheus package)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the Prometheus checks", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def promtool() -> str:
    return need_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return need_binary("prometheus")


@pytest.fixture(scope="session")
def contended_run():
    from metrics_fixtures import ContendedRun

    run = ContendedRun().start()
    yield run
    run.stop()


@pytest.fixture(scope="session")
def scrape_target(request) -> str:
    external = os.environ.get("FAIRGPU_E2E_TARGET")
    if external:
        yield external
        return
    from prometheus_client import start_http_server

    from prom_harness import free_port

    run = request.getfixturevalue("contended_run")
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=run.registry)
    yield f"127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)
