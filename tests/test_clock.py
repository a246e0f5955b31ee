"""One wall clock: ``scheduler.store.utcnow`` (docs/ARCHITECTURE.md, "State and its invariants").

Nothing else in scheduler/ or workloads/ asks ``datetime`` for the time; code that needs
it takes an injected clock, and the server and the CLI hand it ``store.utcnow``.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from scheduler import store
from scheduler.cli import main

ROOT = Path(__file__).resolve().parents[1]
OWNER = "scheduler/store/models.py"
# Copies other changes own; each is to become store.models.utcnow. Remove a line when done.
PENDING: dict[str, str] = {}
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


def _clock_calls(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if (name, node.func.attr) in CLOCK_CALLS:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.{node.func.attr}()")
    return out


def test_the_wall_clock_has_one_owner():
    calls = [c for folder in ("scheduler", "workloads") for p in sorted((ROOT / folder).rglob("*.py"))
             for c in _clock_calls(p)]
    owned = [c for c in calls if c.startswith(OWNER + ":")]
    stray = [c for c in calls if not c.startswith((OWNER + ":", *(f"{p}:" for p in PENDING)))]
    assert len(owned) == 1, owned
    assert not stray, "read the time through scheduler.store.utcnow:\n" + "\n".join(stray)


def test_the_owner_is_aware_utc():
    before = datetime.now(UTC)
    now = store.utcnow()
    assert now.tzinfo is UTC and before <= now <= datetime.now(UTC)


def test_the_server_is_handed_the_one_clock():
    from scheduler.server import Embedded

    assert {f.name: f.default for f in dataclasses.fields(Embedded)}["clock"] is store.utcnow


def test_the_cli_reads_the_one_clock(tmp_path, monkeypatch):
    """A token's expiry is the CLI's `now` plus its lifetime: with the owner fixed, exactly so."""
    fixed = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    monkeypatch.setattr(store, "utcnow", lambda: fixed)
    env = {"FAIRGPU_DB": f"sqlite:///{tmp_path / 'fg.db'}"}
    runner = CliRunner()
    assert runner.invoke(main, ["admin", "account", "add", "a", "--weight", "1"], env=env).exit_code == 0
    issued = runner.invoke(main, ["admin", "token", "issue", "a", "--expires", "2d"], env=env)
    assert issued.exit_code == 0, issued.output
    [row] = json.loads(runner.invoke(main, ["admin", "token", "list", "--json"], env=env).output)
    assert datetime.fromisoformat(row["created_at"]) == fixed
    assert datetime.fromisoformat(row["expires_at"]) == fixed + timedelta(days=2)
    assert row["state"] == "active"
    monkeypatch.setattr(store, "utcnow", lambda: fixed + timedelta(days=3))  # the list's `now` moves too
    [row] = json.loads(runner.invoke(main, ["admin", "token", "list", "--json"], env=env).output)
    assert row["state"] == "expired"
