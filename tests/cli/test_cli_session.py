"""The CLI's one way onto the database, ``cli.common.db_session``, on real SQLite files and
PostgreSQL: one transaction (committed, or rolled back on any error), the engine let go
afterwards, and every command that reads the database going through it, so a database
that cannot be opened is the same one line and exit 1 everywhere."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlmodel import select

from scheduler.cli import common, main
from scheduler.store import Setting

CLI = Path(common.__file__).resolve().parent


def _settings(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = dict(conn.exec_driver_sql("SELECT key, value FROM setting").all())
    engine.dispose()
    return rows


@pytest.fixture
def spied(monkeypatch):
    """The engines db_session opens, each with how often it was disposed of."""
    opened = []
    real = common.open_engine

    def spy(url):
        engine = real(url)
        dispose = engine.dispose
        engine.disposed = 0

        def counting_dispose(*args, **kwargs):
            engine.disposed += 1
            return dispose(*args, **kwargs)

        engine.dispose = counting_dispose
        opened.append(engine)
        return engine

    monkeypatch.setattr(common, "open_engine", spy)
    return opened


def test_a_block_that_ends_normally_commits_and_lets_the_engine_go(db_url, spied):
    with common.db_session(db_url) as session:
        session.add(Setting(key="probe", value="kept"))
    assert _settings(db_url)["probe"] == "kept"
    assert len(spied) == 1 and spied[0].disposed == 1 and spied[0].pool.checkedout() == 0


def test_a_block_that_raises_writes_nothing_and_lets_the_engine_go(db_url, spied):
    with pytest.raises(RuntimeError), common.db_session(db_url) as session:
        session.add(Setting(key="probe", value="lost"))
        session.flush()
        assert session.exec(select(Setting).where(Setting.key == "probe")).one().value == "lost"
        raise RuntimeError("boom")
    assert "probe" not in _settings(db_url)
    assert spied[0].disposed == 1


def test_commands_write_through_it_and_announce_after_commit(db_url, spied):
    runner = CliRunner()
    out = runner.invoke(main, ["admin", "capacity", "set", "--gpus", "2", "--db", db_url])
    assert out.exit_code == 0, out.output
    assert "node local: 2 x T4" in out.stderr
    assert [e.disposed for e in spied] == [1]
    listed = runner.invoke(main, ["admin", "capacity", "list", "--json", "--db", db_url])
    assert listed.exit_code == 0 and '"gpus": 2' in listed.output


BAD_DB = "sqlite:////no/such/dir/fg.db"
# Every command that reads the database, with the database named the way it takes one.
READERS = {
    "account list": ["admin", "account", "list", "--db", BAD_DB],
    "account add": ["admin", "account", "add", "a", "--weight", "1", "--db", BAD_DB],
    "capacity list": ["admin", "capacity", "list", "--db", BAD_DB],
    "settings list": ["admin", "settings", "list", "--db", BAD_DB],
    "token list": ["admin", "token", "list", "--db", BAD_DB],
    "token revoke": ["admin", "token", "revoke", "1", "--db", BAD_DB],
    "share": ["share", "--db", BAD_DB],
    "report": ["report", "--db", BAD_DB],
    "simulate --from-db": ["simulate", "--from-db", BAD_DB, "--policy", "fair-share"],
    "forecast --from-db": ["forecast", "--from-db", BAD_DB],
}


@pytest.mark.parametrize("argv", READERS.values(), ids=READERS)
def test_a_database_that_cannot_be_opened_is_one_line_and_exit_1(argv):
    result = CliRunner().invoke(main, argv, env={"FAIRGPU_URL": None, "FAIRGPU_DB": None})
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: cannot open database")
    assert "Traceback" not in result.output


def _calls(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.name}:{n.lineno} {n.func.id}" for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names]


def test_only_common_opens_sessions_and_engines():
    stray = [c for p in sorted(CLI.glob("*.py")) if p.name != "common.py"
             for c in _calls(p, {"session_scope", "open_engine", "make_engine"})]
    assert not stray, "use cli.common.db_session:\n" + "\n".join(stray)
