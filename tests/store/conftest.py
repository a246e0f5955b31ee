"""Store-test fixtures.

``store`` is a migrated engine shared by a whole module per backend, for tests
that only add rows (each builds its own account, so they do not interfere);
tests about schema or engine set-up use the function-scoped ``db_engine``
from ``tests/conftest.py``. Factories live in ``store_helpers.py``.
"""
from __future__ import annotations

import pytest

from scheduler.store import init_db, make_engine


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'fairgpu.db'}"
    else:
        url = request.getfixturevalue("pg_databases").create()
    engine = make_engine(url)
    init_db(engine)
    yield engine
    engine.dispose()
