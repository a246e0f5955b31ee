"""Fixtures for the API tests (builders in ``api_helpers``): ``seeded`` and a TestClient ``client``."""
from __future__ import annotations

import pytest

from api_helpers import FakeClock, Seeded, seed


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
