"""Alembic environment for fairgpu.

Invariants:
- Called from ``scheduler.store.init_db``, it migrates on the connection passed
  in ``config.attributes["connection"]`` inside the caller's transaction (which
  holds the SQLite write lock or the PostgreSQL advisory lock) and touches no
  logging configuration.
- Called from the ``alembic`` command line, it opens ``FAIRGPU_DB`` (or the
  default SQLite file) through ``make_engine``, never a URL in alembic.ini.
- SQLite migrations use batch mode (``render_as_batch``).
"""
from __future__ import annotations

from alembic import context

from scheduler.store.engine import make_engine
from scheduler.store.models import metadata

config = context.config


def render_item(type_, obj, autogen_context):
    """Render fairgpu's custom column types as plain SQLAlchemy types, so that
    generated migrations never import application code."""
    if type_ != "type":
        return False
    from sqlmodel.sql.sqltypes import AutoString

    from scheduler.store.models import UTCDateTime

    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(obj, AutoString):
        return "sa.String()" if obj.length is None else f"sa.String(length={obj.length})"
    return False


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if config.config_file_name is not None:
        from logging.config import fileConfig

        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = make_engine(config.get_main_option("sqlalchemy.url") or None)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("fairgpu migrations run online only (use init_db or `alembic upgrade head`)")
run_migrations_online()
