"""`fairgpu submit --time` end to end against a live server: Slurm's forms go out as
``time_limit_s``, the account's default and maximum apply, and refusals are one line."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scheduler.cli import main
from scheduler.services.validate import TIME_LIMIT_FORMS

runner = CliRunner()


@pytest.fixture(scope="module")
def limited(live):
    from scheduler.services import accounts
    from scheduler.store import session_scope

    with session_scope(live.engine) as s:
        accounts.set_account(s, "uni-a", default_time_s=3600, max_time_s=86_400)
    return live


def submit(env, *extra):
    return runner.invoke(main, ["submit", "hold", "--seconds", "5", "--slices", "1", *extra], env=env)


@pytest.mark.parametrize("given, seconds", [("90", 5400), ("10:30", 630), ("2:00:00", 7200), ("1-00", 86_400),
                                            ("0-12:30", 45_000), ("45m", 2700), (None, 3600)])
def test_submit_time_in_slurm_forms(limited, env_for, given, seconds):
    r = submit(env_for("a_vision"), *(["--time", given] if given else []))
    assert r.exit_code == 0, r.output
    shown = json.loads(runner.invoke(main, ["job", "show", r.stdout.strip(), "--json"],
                                     env=env_for("a_vision")).stdout)
    assert shown["time_limit_s"] == seconds


def test_an_account_without_limits_gets_none(limited, env_for):
    r = submit(env_for("b"))
    shown = json.loads(runner.invoke(main, ["job", "show", r.stdout.strip(), "--json"], env=env_for("b")).stdout)
    assert shown["time_limit_s"] is None


@pytest.mark.parametrize("given, message", [
    ("1-00:00:01", "Error: time limit 86401s exceeds the maximum of 1d for account uni-a/vision"),
    ("2h30", f"Error: time must be {TIME_LIMIT_FORMS} (got '2h30')"),
    ("0", "Error: time must be 1s to 30d (got 0)"),
    ("31-00", "Error: time must be 1s to 30d (got 31-00)"),
])
def test_bad_times_are_refused_with_one_line(limited, env_for, given, message):
    env = env_for("a_vision")
    before = json.loads(runner.invoke(main, ["jobs", "--all", "--json"], env=env).stdout)
    r = submit(env, "--time", given)
    assert (r.exit_code, r.stderr.strip(), r.stdout) == (1, message, "")
    assert json.loads(runner.invoke(main, ["jobs", "--all", "--json"], env=env).stdout) == before
