"""Fixtures for the validation tests: the API tests' seeded fairgpu (``api_helpers``) and a client."""
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

    with TestClient(create_app(seeded.engine, clock=seeded.clock)) as c:
        yield c
