"""`fairgpu admin token`: scrape tokens, and strict token lifetimes (one line, exit 1, nothing written)."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from cli_runner import admin_cli



@pytest.fixture
def cli(tmp_path):
    run = admin_cli(tmp_path)
    url = run.url

    run("admin", "account", "add", "uni-a", "--weight", "1")
    def tokens() -> int:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM api_token")).scalar()
        engine.dispose()
        return n

    run.tokens = tokens
    return run


def test_scrape_token_is_issued_and_listed_with_its_scope(cli):
    raw = cli("admin", "token", "issue", "--scrape", "--name", "prometheus", "--expires", "365d").stdout.strip()
    assert raw.startswith("fg_") and "\n" not in raw
    rows = {r["name"]: r for r in json.loads(cli("admin", "token", "list", "--json").stdout)}
    assert rows["prometheus"]["scope"] == "scrape" and rows["prometheus"]["admin"] is False
    assert rows["prometheus"]["account"] is None and rows["prometheus"]["expires_at"]


@pytest.mark.parametrize("args", [["--scrape", "uni-a"], ["--scrape", "--admin"], ["--admin", "uni-a"], []])
def test_exactly_one_kind_of_token(cli, args):
    result = cli("admin", "token", "issue", *args, expect=2)
    assert "exactly one of ACCOUNT, --admin or --scrape" in result.output
    assert cli.tokens() == 0


@pytest.mark.parametrize("expires,message", [
    ("3y", "expires must be a duration such as 90s, 10m, 2h or 7d"),  # unknown unit
    ("99999999999999999999d", "expires must be 1m to 3650d"),  # an overflowing day count
    ("1e400s", "expires must be a duration"),
    ("-5d", "expires must be a duration"),
    ("30s", "expires must be 1m to 3650d"),
    ("3651d", "expires must be 1m to 3650d"),
    (" 30d", "expires must be a duration"),
    ("", "expires must be a duration"),
])
def test_token_lifetimes_are_parsed_strictly(cli, expires, message):
    result = cli("admin", "token", "issue", "uni-a", "--expires", expires, expect=1)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert cli.tokens() == 0


def test_a_valid_lifetime_is_kept(cli):
    cli("admin", "token", "issue", "uni-a", "--expires", "12h")
    (row,) = json.loads(cli("admin", "token", "list", "--json").stdout)
    assert row["scope"] == "full" and row["state"] == "active" and row["expires_at"]


def test_the_scrape_token_command_in_docs_metrics_runs(cli, tmp_path):
    import shlex
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    (line,) = [ln for ln in doc.splitlines() if ln.startswith("fairgpu admin token issue --scrape")]
    command, _, target = line.partition(" > ")
    assert target == "scrape.token"
    out = cli(*shlex.split(command)[1:]).stdout  # the file gets stdout: the token and nothing else
    assert out.count("\n") == 1 and out.startswith("fg_")
