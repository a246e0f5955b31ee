"""Runs every example in docs/institutions.md against a live server over a fresh SQLite file.

A `$ fairgpu ...` line runs through click's CliRunner as the institution uni-north;
`http://127.0.0.1:8470` on the page stands for the test server's address and
`fg_YOUR_TOKEN` for uni-north's token. Every other line of the block must appear in
what the command printed (whitespace collapsed; `...` matches anything), and a line
starting "Error:" means exit 1, otherwise exit 0. No scheduling loop runs here, so
the page only shows states that do not depend on jobs running (PENDING, CANCELLED);
output of finished jobs is shown in `text` blocks, which are not run.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from live_server import now, start
from scheduler.cli import main
from doc_examples import examples, squash

DOC = Path(__file__).resolve().parents[2] / "docs" / "institutions.md"
PAGE_URL, PAGE_TOKEN = "http://127.0.0.1:8470", "fg_YOUR_TOKEN"


def seed(engine) -> dict[str, str]:
    from scheduler.services import accounts, auth, capacity
    from scheduler.store import session_scope

    with session_scope(engine) as s:
        capacity.set_node(s, node="gpu-box-1", gpus=4, slices_per_gpu=4, gpu_type="T4", at=now())
        accounts.add_account(s, "uni-north", weight=3, guaranteed=4, default_time_s=2 * 3600, max_time_s=86_400)
        accounts.add_account(s, "uni-north/vision", parent="uni-north", weight=2, guaranteed=2)
        accounts.add_account(s, "uni-north/nlp", parent="uni-north", weight=1, max_pending=2)
        accounts.add_account(s, "uni-south", weight=1)
    with session_scope(engine) as s:
        return {"uni-north": auth.issue_token(s, account="uni-north", name="uni-north", expires_s=None, at=now())}


@pytest.fixture(scope="module")
def doc_server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("doc") / "fairgpu.db", seed=seed)
    yield server
    server.stop()


def matches(line: str, output: str) -> bool:
    pattern = ".*?".join(re.escape(part) for part in squash(line).split("..."))
    return re.search(pattern, output) is not None


def test_every_institution_example_runs(doc_server, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "FAIRGPU_URL": None, "FAIRGPU_TOKEN": None,
           "FAIRGPU_DB": None}
    runner = CliRunner()
    ran = 0
    for cmd, expected in examples(DOC.read_text()):
        cmd = cmd.replace(PAGE_URL, doc_server.url).replace(PAGE_TOKEN, doc_server.tokens["uni-north"])
        argv = shlex.split(cmd)
        assert argv[0] == "fairgpu", cmd
        result = runner.invoke(main, argv[1:], env=env)
        output = squash(result.stdout + result.stderr)
        wants_error = any(line.startswith("Error:") for line in expected)
        assert result.exit_code == (1 if wants_error else 0), f"{cmd}: exit {result.exit_code}\n{output}"
        for line in expected:
            line = line.replace(PAGE_URL, doc_server.url)
            assert matches(line, output), f"{cmd}: expected {line!r} in\n{output}"
        ran += 1
    assert ran >= 15
