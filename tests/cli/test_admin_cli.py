"""The admin CLI through click's runner on real SQLite files: exit codes, one-line errors,
and bad input that writes nothing."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from cli_runner import admin_cli
from click.testing import CliRunner

from quota import limits
from scheduler.cli import main
from scheduler.services.share import SHARE_KEYS
from scheduler.services.validate import describe_duration


@pytest.fixture
def cli(tmp_path):
    return admin_cli(tmp_path)


def table_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = [r[0] for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type='table' AND name != 'alembic_version'")]
        counts = {t: conn.exec_driver_sql(f'SELECT COUNT(*) FROM "{t}"').scalar() for t in tables}
        counts["_settings"] = tuple(conn.exec_driver_sql("SELECT key, value FROM setting ORDER BY key").all())
        counts["_accounts"] = tuple(conn.exec_driver_sql(
            "SELECT name, weight, guaranteed_slices, max_slices, max_pending, parent_id FROM account ORDER BY name").all())
    engine.dispose()
    return counts


@pytest.fixture
def seeded(cli, tmp_path):
    cli("admin", "capacity", "set", "--gpus", "2")
    cli("admin", "account", "add", "a", "--weight", "1", "--guaranteed", "2")
    cli("admin", "account", "add", "b", "--weight", "2", "--max", "6")
    cli("admin", "account", "add", "a/x", "--weight", "1", "--parent", "a", "--guaranteed", "1")
    return cli


BAD = {
    "unknown parent": (["admin", "account", "add", "c", "--weight", "1", "--parent", "zz"], "unknown account zz"),
    "zero weight": (["admin", "account", "add", "c", "--weight", "0"],
                    f"account c: weight must be {limits.WEIGHT.describe()} (got 0.0)"),
    "negative weight": (["admin", "account", "set", "a", "--weight", "-2"],
                        f"weight must be {limits.WEIGHT.describe()} (got -2.0)"),
    "negative guarantee": (["admin", "account", "add", "c", "--weight", "1", "--guaranteed", "-1"],
                           f"guaranteed must be {limits.GUARANTEED.describe()} (got -1)"),
    "negative cap": (["admin", "account", "set", "b", "--max", "-3"], f"max must be {limits.MAX_SLICES.describe()}"),
    "guarantee over capacity": (["admin", "account", "add", "c", "--weight", "1", "--guaranteed", "7"],
                                "over the capacity of 8"),
    "guarantee over parent": (["admin", "account", "add", "a/y", "--weight", "1", "--parent", "a",
                               "--guaranteed", "2"], "over its own guarantee of 2"),
    "cap below guarantee": (["admin", "account", "set", "a", "--max", "1"], "below its guarantee"),
    "duplicate": (["admin", "account", "add", "b", "--weight", "1"], "already exists"),
    "unknown account set": (["admin", "account", "set", "nope", "--weight", "1"], "unknown account nope"),
    "unknown account remove": (["admin", "account", "remove", "nope"], "unknown account nope"),
    "remove with children": (["admin", "account", "remove", "a"], "has sub-accounts"),
    "capacity below guarantees": (["admin", "capacity", "set", "--gpus", "0"], "below the 2 slices guaranteed"),
    "negative gpus": (["admin", "capacity", "set", "--gpus", "-1"], f"gpus must be {limits.GPUS_PER_NODE.describe()}"),
    "zero slices per gpu": (["admin", "capacity", "set", "--gpus", "1", "--slices-per-gpu", "0"],
                            f"slices_per_gpu must be {limits.SLICES_PER_GPU.describe()}"),
    "bad setting": (["admin", "settings", "set", "half_life", "0d"],
                    f"half_life must be {describe_duration(limits.HALF_LIFE)} (got 0d)"),
    "unknown setting": (["admin", "settings", "set", "colour", "blue"], "unknown setting"),
    "host memory below its range": (["admin", "settings", "set", "host_memory_per_slice", "1M"],
                                    "host_memory_per_slice must be 64MiB to 64TiB (got 1M)"),
    "host memory in decimal units": (["admin", "settings", "set", "host_memory_per_slice", "8GB"],
                                     "host_memory_per_slice must be a size such as 8GiB"),
    "processes not a number": (["admin", "settings", "set", "max_processes", "lots"],
                               f"max_processes must be {limits.MAX_PROCESSES.describe()} (got 'lots')"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_1_writes_nothing(seeded, case):
    args, message = BAD[case]
    before = table_counts(seeded.url)
    result = seeded(*args, expect=1)
    assert message in result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert table_counts(seeded.url) == before


@pytest.mark.parametrize("rows, message", [
    ("account,slice_seconds,at\nghost,1,2026-01-01T00:00:00Z\n", "line 2: unknown account 'ghost'"),
    ("account,slice_seconds,at\na/x,1,2026-01-01\nb,-5,2026-01-01\n", "line 3: slice_seconds must be"),
    ("account,slice_seconds,at\nb,5,yesterday\n",
     "line 2: at must be a date (YYYY-MM-DD) or an ISO 8601 time (got 'yesterday')"),
    ("account,slice_seconds,at\nb,5,2026-01-01\nb,5,2026-W01-1\n", "line 3: at must be a date (YYYY-MM-DD)"),
    ("account,slice_seconds,at\nb,5,1969-12-31T23:59:59Z\n", "line 2: at must be 1970-01-01 or later"),
    ("account,slice_seconds,at\nb,5\n", "line 2: expected 3 columns"),
    ("who,what,when\nb,5,2026-01-01\n", "line 1: header must be account,slice_seconds,at"),
    ("account,slice_seconds,at\nb,nan,2026-01-01\n", "line 2: slice_seconds must be a finite number"),
])
def test_malformed_usage_csv_names_the_line_and_imports_nothing(seeded, tmp_path, rows, message):
    path = tmp_path / "usage.csv"
    path.write_text(rows)
    before = table_counts(seeded.url)
    result = seeded("admin", "usage", "import", str(path), expect=1)
    assert message in result.output
    assert table_counts(seeded.url) == before


def test_usage_import_feeds_the_fair_share_factor(seeded, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text("account,slice_seconds,at\na/x,3600,2026-11-20T00:00:00\nb,100,2026-11-20T00:00:00Z\n")
    seeded("admin", "usage", "import", str(path))
    rows = {r["account"]: r for r in json.loads(seeded("share", "--json").output)}
    assert rows["a/x"]["raw_usage"] > rows["b"]["raw_usage"] > 0
    assert rows["a"]["raw_usage"] == pytest.approx(rows["a/x"]["raw_usage"])
    assert rows["a/x"]["fairshare_factor"] < rows["b"]["fairshare_factor"] < 1.0


def test_share_json_has_exactly_the_documented_keys(seeded):
    rows = json.loads(seeded("share", "--json").output)
    assert [r["account"] for r in rows] == ["a", "a/x", "b"]
    for r in rows:
        assert tuple(r) == SHARE_KEYS
    assert rows[0]["norm_shares"] == pytest.approx(1 / 3)
    assert json.loads(seeded("share", "--json", "--account", "a").output)[-1]["account"] == "a/x"
    seeded("share", "--account", "nope", expect=1)


def test_listings_take_json(seeded):
    accounts = json.loads(seeded("admin", "account", "list", "--json").output)
    assert {a["account"]: a["parent"] for a in accounts} == {"a": None, "a/x": "a", "b": None}
    nodes = json.loads(seeded("admin", "capacity", "list", "--json").output)
    assert nodes == [{"node": "local", "gpu_type": "T4", "gpus": 2, "slices_per_gpu": 4, "slices": 8,
                      "active": True, "source": "declared", "frameworks": None, "reason": None, "ray_id": None}]
    settings = json.loads(seeded("admin", "settings", "list", "--json").output)
    assert {s["key"] for s in settings} == {"half_life", "algorithm", "preemption", "reclaim",
                                            "host_memory_per_slice", "max_processes"}


def test_set_and_remove(seeded):
    seeded("admin", "account", "set", "b", "--no-max", "--weight", "5")
    b = next(a for a in json.loads(seeded("admin", "account", "list", "--json").output) if a["account"] == "b")
    assert b["max_slices"] is None and b["weight"] == 5
    seeded("admin", "account", "remove", "a/x")
    seeded("admin", "account", "remove", "a")
    assert [a["account"] for a in json.loads(seeded("admin", "account", "list", "--json").output)] == ["b"]
    result = seeded("admin", "account", "set", "b", "--max", "3", "--no-max", expect=2)
    assert "exclude each other" in result.output


def test_database_it_cannot_open_names_the_url_without_password(tmp_path):
    runner = CliRunner()
    url = f"sqlite:///{tmp_path}/no/such/dir/fg.db"
    result = runner.invoke(main, ["admin", "account", "list", "--db", url])
    assert result.exit_code == 1 and "cannot open database" in result.output and "no/such/dir" in result.output
    pg = "postgresql+psycopg://admin:s3cret@127.0.0.1:1/fairgpu"
    result = runner.invoke(main, ["share", "--db", pg])
    assert result.exit_code == 1
    assert "s3cret" not in result.output and "***" in result.output and result.output.count("\n") == 1


def test_usage_errors_exit_2(seeded):
    assert seeded("admin", "account", "add", "c", expect=2).exit_code == 2  # --weight missing
    seeded("admin", "capacity", "set", "--gpus", "many", expect=2)


def test_attempt_limit_settings_are_set_and_listed_readably(seeded):
    assert "host_memory_per_slice = 8GiB" in seeded("admin", "settings", "set", "host_memory_per_slice", "8GiB").output
    assert "max_processes = 512" in seeded("admin", "settings", "set", "max_processes", "512").output
    table = seeded("admin", "settings", "list").output
    assert [ln.split() for ln in table.splitlines() if ln.strip().startswith(("host_memory", "max_proc"))] == [
        ["host_memory_per_slice", "8GiB"], ["max_processes", "512"]]
    stored = {r["key"]: r["value"] for r in json.loads(seeded("admin", "settings", "list", "--json").output)}
    assert (stored["host_memory_per_slice"], stored["max_processes"]) == (str(8 << 30), "512")
    seeded("admin", "settings", "set", "host_memory_per_slice", "node")
    stored = {r["key"]: r["value"] for r in json.loads(seeded("admin", "settings", "list", "--json").output)}
    assert stored["host_memory_per_slice"] == "node"
