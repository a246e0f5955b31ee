"""Runs every example in docs/admin.md against a real SQLite file.

A `$ fairgpu ...` line runs through click's CliRunner; a `$ printf ...` line writes the
file as the shell would. Every other line in the block must appear (whitespace
collapsed) in what the command printed, and a line starting "Error:" means the
command must exit 1; otherwise it must exit 0.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from click.testing import CliRunner

from scheduler.cli import main
from doc_examples import examples, squash

DOC = Path(__file__).resolve().parents[2] / "docs" / "admin.md"


def test_every_admin_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"FAIRGPU_DB": f"sqlite:///{tmp_path / 'admin.db'}"}
    runner = CliRunner()
    ran = 0
    for cmd, expected in examples(DOC.read_text()):
        argv = shlex.split(cmd)
        if argv[0] == "printf":
            target = cmd.rsplit(">", 1)[1].strip()
            content = shlex.split(cmd.rsplit(">", 1)[0])[1]
            (tmp_path / target).write_text(content.encode().decode("unicode_escape"))
            continue
        assert argv[0] == "fairgpu", cmd
        result = runner.invoke(main, argv[1:], env=env)
        output = squash(result.output + (result.stderr if result.stderr_bytes is not None else ""))
        wants_error = any(line.startswith("Error:") for line in expected)
        assert result.exit_code == (1 if wants_error else 0), f"{cmd}: exit {result.exit_code}\n{result.output}"
        for line in expected:
            assert squash(line) in output, f"{cmd}: expected {line!r} in\n{output}"
        ran += 1
    assert ran >= 20
