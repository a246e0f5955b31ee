"""Fixtures for the metrics tests.

- `promtool` / `prometheus`: paths of Debian's binaries (deploy/install-prometheus.sh).
  Missing binaries skip visibly, except when CI is set: then the test fails.
- `contended_run`: a synthetic run (metrics_fixtures.ContendedRun) for fast exporter tests.
- `real_run`: the real embedded fairgpu server under contended load (real_run.RealRun),
  one per module; None when FAIRGPU_E2E_TARGET names another target.
- `scrape_target`: host:port of the /metrics endpoint the end-to-end tests scrape. By
  default the real run's server; FAIRGPU_E2E_TARGET=host:port points them at a running
  `fairgpu up` instead, and FAIRGPU_E2E_TARGET=synthetic at an in-process exporter fed
  by ContendedRun (seconds instead of a minute, for dashboard work).
- `scrape_token`: the scrape token Prometheus sends (per-account series need one); for
  FAIRGPU_E2E_TARGET=host:port, FAIRGPU_E2E_TOKEN.
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


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    if os.environ.get("FAIRGPU_E2E_TARGET"):
        yield None
        return
    from real_run import RealRun

    run = RealRun(tmp_path_factory.mktemp("real-run")).start()
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def scrape_token(request) -> str | None:
    """The token Prometheus scrapes with: the real run's scrape token, FAIRGPU_E2E_TOKEN for
    a running `fairgpu up`, none for the synthetic exporter (it serves every series)."""
    external = os.environ.get("FAIRGPU_E2E_TARGET")
    if external == "synthetic":
        return None
    if external:
        return os.environ.get("FAIRGPU_E2E_TOKEN")
    return request.getfixturevalue("real_run").scrape_token


@pytest.fixture(scope="module")
def scrape_target(request) -> str:
    external = os.environ.get("FAIRGPU_E2E_TARGET")
    if external and external != "synthetic":
        yield external
        return
    if not external:
        yield request.getfixturevalue("real_run").target
        return
    from prometheus_client import start_http_server

    run = request.getfixturevalue("contended_run")
    server, thread = start_http_server(0, addr="127.0.0.1", registry=run.registry)  # any free port, bound now
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
