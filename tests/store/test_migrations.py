"""Alembic owns the schema: head builds it from empty, matches the models, and
runs from the installed package, idempotently and concurrently."""
from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from scheduler.store import alembic_config, init_db, make_engine, metadata

TABLES = {"account", "node", "job", "job_event", "usage_record", "api_token", "setting", "leader_lease", "wait_reason",
          "job_gate",
          "alembic_version"}


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _version(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_init_db_from_empty_and_again(db_url):
    engine = make_engine(db_url)
    assert sa.inspect(engine).get_table_names() == []
    init_db(engine)
    assert set(sa.inspect(engine).get_table_names()) == TABLES
    assert _version(engine) == _head()
    init_db(engine)  # idempotent
    assert _version(engine) == _head()
    engine.dispose()


def test_head_matches_the_models(db_engine):
    with db_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(ctx, metadata) == []


def test_compare_detects_a_drifted_model(db_engine):
    """Guard for the test above: a column missing from the database is reported."""
    drifted = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["job"].append_column(sa.Column("extra", sa.Integer, nullable=True))
    with db_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), drifted)
    assert [d[0] for d in diff] == ["add_column"]


def test_downgrade_to_base_and_back(db_engine):
    config = alembic_config()
    with db_engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert set(sa.inspect(db_engine).get_table_names()) <= {"alembic_version"}
    init_db(db_engine)
    assert set(sa.inspect(db_engine).get_table_names()) == TABLES


def test_migrations_ship_inside_the_package_and_import_no_app_code():
    root = resources.files("scheduler") / "migrations"
    assert (root / "alembic.ini").is_file() and (root / "env.py").is_file()
    for path in (root / "versions").iterdir():
        if path.name.endswith(".py"):
            assert not re.search(r"^\s*(from|import) (scheduler|sqlmodel)", path.read_text(), re.M), path.name


def test_init_db_runs_outside_the_repo(sqlite_url, tmp_path):
    """No repo-root alembic.ini is needed: run from an unrelated directory."""
    code = "import sys; from scheduler.store import *; init_db(make_engine(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, sqlite_url], cwd=tmp_path, check=True, timeout=60)
    engine = make_engine(sqlite_url)
    assert _version(engine) == _head()
    engine.dispose()


def test_concurrent_init_db(db_url):
    """Three processes migrate one empty database at once; all succeed."""
    code = "import sys; from scheduler.store import *; init_db(make_engine(sys.argv[1])); print('ok')"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    engine = make_engine(db_url)
    assert _version(engine) == _head()
    engine.dispose()
