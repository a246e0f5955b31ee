"""`fairgpu admin account add/set/list` with --default-time, --max-time and the scripts flags,
through click's runner on a real SQLite file."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from cli_runner import admin_cli

from scheduler.services.validate import TIME_LIMIT_FORMS


@pytest.fixture
def cli(tmp_path):
    run = admin_cli(tmp_path)
    run("admin", "capacity", "set", "--gpus", "2")
    run("admin", "account", "add", "u", "--weight", "1", "--default-time", "1:00:00", "--max-time", "1-00",
        "--allow-scripts")
    run("admin", "account", "add", "u/a", "--weight", "1", "--parent", "u", "--max-time", "48h")
    run("admin", "account", "add", "u/b", "--weight", "1", "--parent", "u", "--no-allow-scripts")
    run("admin", "account", "add", "v", "--weight", "1")
    return run


def settings(url: str) -> dict[str, tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, default_time_s, max_time_s, allow_scripts FROM account").all()
    engine.dispose()
    return {r[0]: tuple(r[1:]) for r in rows}


def listed(cli) -> dict[str, dict]:
    return {r["account"]: r for r in json.loads(cli("admin", "account", "list", "--json").stdout)}


def test_add_takes_slurm_forms_and_list_shows_own_and_effective_values(cli):
    assert settings(cli.url) == {"u": (3600.0, 86400.0, 1), "u/a": (None, 172800.0, None),
                                 "u/b": (None, None, 0), "v": (None, None, None)}
    rows = listed(cli)
    assert rows["u/a"]["max_time_s"] == 172800 and rows["u/a"]["effective"]["default_time_s"] == 3600
    assert rows["u/a"]["effective"]["from"] == {"default_time_s": "u", "max_time_s": "u/a", "allow_scripts": "u"}
    assert rows["v"]["effective"] == {"default_time_s": None, "max_time_s": None, "allow_scripts": False,
                                      "from": {"default_time_s": None, "max_time_s": None, "allow_scripts": None}}
    table = [" ".join(line.split()) for line in cli("admin", "account", "list").stdout.splitlines()]
    assert table == ["account weight guaranteed_slices max_slices max_pending default_time max_time scripts",
                     "u 1 0 - - 1h 1d yes", "u/a 1 0 - - 1h (u) 2d yes (u)", "u/b 1 0 - - 1h (u) 1d (u) no",
                     "v 1 0 - - - - no"]


def test_set_changes_clears_and_inherits_again(cli):
    cli("admin", "account", "set", "u/a", "--default-time", "90", "--no-max-time", "--no-allow-scripts")
    assert settings(cli.url)["u/a"] == (5400.0, None, 0)
    cli("admin", "account", "set", "u/a", "--no-default-time", "--inherit-scripts")
    assert settings(cli.url)["u/a"] == (None, None, None)
    assert listed(cli)["u/a"]["effective"]["allow_scripts"] is True
    cli("admin", "account", "set", "u", "--weight", "2")  # leaves the times and scripts alone
    assert settings(cli.url)["u"] == (3600.0, 86400.0, 1)


BAD = {
    "default over the inherited max": (["set", "u/b", "--default-time", "2-00"],
                                       "account u/b: default time 2d exceeds the maximum of 1d inherited from u"),
    "a parent's max under a child's default": (["set", "u", "--max-time", "30"],
                                               "account u: default time 1h exceeds its maximum of 30m"),
    "a bad form": (["set", "u", "--max-time", "1h30"], f"max_time must be {TIME_LIMIT_FORMS} (got '1h30')"),
    "out of range": (["add", "w", "--weight", "1", "--default-time", "31-00"], "default_time must be 1s to 30d"),
    "zero": (["set", "u", "--default-time", "0"], "default_time must be 1s to 30d (got 0)"),
    "seconds past 59": (["set", "u", "--default-time", "1:00:75"], "minutes and seconds after a ':'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_times_one_line_exit_1_write_nothing(cli, case):
    args, message = BAD[case]
    before = settings(cli.url)
    result = cli("admin", "account", *args, expect=1)
    assert result.output.startswith("Error: ") and message in result.output and result.output.count("\n") == 1
    assert settings(cli.url) == before


@pytest.mark.parametrize("args", [
    ["--default-time", "1h", "--no-default-time"],
    ["--max-time", "1h", "--no-max-time"],
    ["--allow-scripts", "--inherit-scripts"],
    ["--no-allow-scripts", "--inherit-scripts"],
])
def test_setting_and_clearing_at_once_is_a_usage_error(cli, args):
    result = cli("admin", "account", "set", "u", *args, expect=2)
    assert "exclude each other" in result.output


def test_add_has_no_clearing_flags(cli):
    cli("admin", "account", "add", "w", "--weight", "1", "--no-max-time", expect=2)
