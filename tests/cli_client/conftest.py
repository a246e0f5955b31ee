"""Fixtures for the client CLI: a live server (``live_server``) and a CliRunner env per role."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file (pytest runs in importlib mode)

from live_server import start  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("live") / "fairgpu.db")
    yield server
    server.stop()


@pytest.fixture
def env_for(live, tmp_path):
    """CliRunner environment acting as ``role``, with a private config dir and no stray settings."""

    def make(role: str | None, **extra) -> dict:
        env = {"FAIRGPU_URL": live.url, "FAIRGPU_TOKEN": live.tokens[role] if role else None,
               "XDG_CONFIG_HOME": str(tmp_path / "config"), "FAIRGPU_DB": None}
        env.update(extra)
        return env

    return make
