"""The README's console examples run. Lines that need a live server or run forever
(`up`, `login`, `submit`, `jobs`, `job`, `share` through the API, `bench --quick`) are
run against a live server by tests/cli_client/test_institutions_doc.py, by
tests/service and by tests/workloads; here every other line runs, and those are
checked to be real commands (their --help works)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from scheduler.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
ELSEWHERE = {"up", "login", "submit", "jobs", "job", "share", "bench"}


def test_readme_examples(tmp_path):
    lines = [line[2:] for block in re.findall(r"```console\n(.*?)```", README.read_text(), re.S)
             for line in block.splitlines() if line.startswith("$ ")]
    assert len(lines) >= 10
    runner = CliRunner()
    env = {"FAIRGPU_DB": f"sqlite:///{tmp_path / 'readme.db'}"}
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "fairgpu", line
        args = argv[1:]
        if args[0] in ELSEWHERE:
            path = args[:2] if args[0] == "job" else args[:1]
            args = [*path, "--help"]
        result = runner.invoke(main, args, env=env)
        assert result.exit_code == 0, f"{line}: {result.output}"
