"""Helpers for the validation tests: the whole content of the database, to show nothing was written."""
from __future__ import annotations

# Written by reads, by design: authenticating stamps a token's last use (at most once a minute).
READ_STAMPS = {("api_token", "last_used_at")}


def dump(engine) -> dict[str, list[tuple]]:
    """Every row of every table (but the alembic version and read stamps), in a stable order."""
    import sqlalchemy as sa

    meta = sa.MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            if name == "alembic_version":
                continue
            cols = [c for c in table.columns if (name, c.name) not in READ_STAMPS]
            rows = conn.execute(sa.select(*cols)).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def one_line(text: str) -> bool:
    return "\n" not in text.strip()
