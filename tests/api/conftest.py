"""Fixtures for the API tests (builders in ``api_helpers``): ``seeded`` and a TestClient ``client``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file (pytest runs in importlib mode)

from api_helpers import FakeClock, Seeded, seed  # noqa: E402


@pytest.fixture
def seeded(db_engine) -> Seeded:
    return seed(db_engine, FakeClock())


@pytest.fixture
def client(seeded):
    from fastapi.testclient import TestClient

    from scheduler.api import create_app

    changes: list[int] = []
    app = create_app(seeded.engine, clock=seeded.clock, on_change=lambda: changes.append(1))
    with TestClient(app) as c:
        c.changes = changes
        yield c
