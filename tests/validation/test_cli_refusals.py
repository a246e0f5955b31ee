"""The admin CLI refuses what the API refuses, on SQLite and PostgreSQL: exit 1, one line
on stderr naming the field and what is allowed, and nothing written."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from quota import limits
from scheduler.cli import main
from scheduler.services.validate import describe_duration
from validation_helpers import dump

W = f"weight must be {limits.WEIGHT.describe()}"
BAD = {
    # non-finite and extreme weights
    "weight nan": (["account", "add", "c", "--weight", "nan"], [W, "(got nan)"]),
    "weight inf": (["account", "set", "b", "--weight", "inf"], [W, "(got inf)"]),
    "weight 1e300": (["account", "set", "b", "--weight", "1e300"], [W]),
    "weight 1e-300": (["account", "add", "c", "--weight", "1e-300"], [W]),
    # integers past what a column holds
    "cap 2^31": (["account", "set", "b", "--max", str(2**31)], [f"max must be {limits.MAX_SLICES.describe()}"]),
    "pending 2^63": (["account", "add", "c", "--weight", "1", "--max-pending", str(2**63)],
                     [f"max_pending must be {limits.MAX_PENDING.describe()}"]),
    "guarantee 2^64": (["account", "add", "c", "--weight", "1", "--guaranteed", str(2**64)], ["guaranteed must be"]),
    "gpus 2^31": (["capacity", "set", "--gpus", str(2**31)], [f"gpus must be {limits.GPUS_PER_NODE.describe()}"]),
    "slices per GPU 2^63": (["capacity", "set", "--gpus", "1", "--slices-per-gpu", str(2**63), "--node", "n2"],
                            [f"slices_per_gpu must be {limits.SLICES_PER_GPU.describe()}"]),
    "half-life unit": (["settings", "set", "half_life", "3fortnights"], ["half_life must be a duration"]),
    "half-life overflow": (["settings", "set", "half_life", "9" * 30 + "d"],
                           [f"half_life must be {describe_duration(limits.HALF_LIFE)}"]),
    "token lifetime unit": (["token", "issue", "b", "--expires", "10y"], ["expires must be a duration"]),
    "token id 2^31": (["token", "revoke", str(2**31)], [f"token id must be {limits.ID.describe()}"]),
    # NUL bytes
    "NUL in a name": (["account", "add", "c\x00d", "--weight", "1"], ["control characters"]),
    "NUL in a parent": (["account", "add", "c", "--weight", "1", "--parent", "a\x00"], ["parent"]),
    "NUL in an account to change": (["account", "set", "b\x00", "--weight", "1"], ["account"]),
    "NUL in a node": (["capacity", "set", "--gpus", "1", "--node", "n\x00"], ["node"]),
    # names
    "dot-dot": (["account", "add", "a/..", "--weight", "1", "--parent", "a"], ["'..'"]),
    "control character": (["account", "add", "c\x07", "--weight", "1"], ["control characters"]),
    "top-level slash": (["account", "add", "c/d", "--weight", "1"], ["a top-level account's name has no '/'"]),
    "surrounding whitespace": (["account", "add", "b ", "--weight", "1"], ["surrounding whitespace"]),
    "wrong prefix": (["account", "add", "b/x", "--weight", "1", "--parent", "a"], ["does not match its parent a"]),
}


@pytest.fixture
def cli(db_url):
    runner = CliRunner()

    def run(*args, expect=0):
        result = runner.invoke(main, list(args), env={"FAIRGPU_DB": db_url})
        assert result.exit_code == expect, f"{args}: {result.exit_code}\n{result.output}"
        return result

    run("admin", "capacity", "set", "--gpus", "2")
    run("admin", "account", "add", "a", "--weight", "1", "--guaranteed", "2")
    run("admin", "account", "add", "b", "--weight", "2", "--max", "6")
    run("admin", "account", "add", "a/x", "--weight", "1", "--parent", "a")
    run.url = db_url
    return run


def _dump(url):
    from scheduler.store import make_engine

    engine = make_engine(url)
    try:
        return dump(engine)
    finally:
        engine.dispose()


def test_bad_admin_input_exits_1_with_one_line_and_writes_nothing(cli):
    before = _dump(cli.url)
    for what, (args, phrases) in BAD.items():
        result = cli("admin", *args, expect=1)
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, f"{what}: {result.output!r}"
        for phrase in phrases:
            assert phrase in result.output, f"{what}: {phrase!r} not in {result.output!r}"
    assert _dump(cli.url) == before


def test_reparenting_a_leaf_with_jobs_under_a_leaf_with_jobs_is_refused(cli):
    from datetime import datetime, timezone

    from scheduler.services.accounts import get_account
    from scheduler.store import make_engine, session_scope
    from scheduler.store.transitions import submit_jobs

    cli("admin", "account", "add", "lab", "--weight", "1", "--parent", "a")  # a one-part name may move
    engine = make_engine(cli.url)
    with session_scope(engine) as s:
        for name in ("lab", "b"):
            submit_jobs(s, count=1, account_id=get_account(s, name).id, model="hold", framework=None, mode="train",
                        slices=1, spec={"seconds": 1}, at=datetime.now(timezone.utc))
    engine.dispose()
    before = _dump(cli.url)
    result = cli("admin", "account", "set", "lab", "--parent", "b", expect=1)
    assert result.output == "Error: account b has jobs of its own; jobs run on leaf accounts only\n"
    result = cli("admin", "account", "set", "b", "--parent", "lab", expect=1)
    assert "account lab has jobs of its own" in result.output
    assert _dump(cli.url) == before
    cli("admin", "account", "set", "lab", "--parent", "a/x")  # a/x has no jobs: lab stays a leaf, a/x a parent
