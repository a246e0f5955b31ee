"""One way the admin CLI tests run `fairgpu` on a real SQLite file (CliRunner, FAIRGPU_DB)."""
from __future__ import annotations

from click.testing import CliRunner

from scheduler.cli import main


def admin_cli(tmp_path):
    """`run(*args, expect=0)` invokes the CLI on a fresh SQLite file and asserts the exit
    status; `run.url` is the database's URL."""
    url = f"sqlite:///{tmp_path / 'fg.db'}"
    runner = CliRunner()

    def run(*args, expect=0):
        result = runner.invoke(main, list(args), env={"FAIRGPU_DB": url})
        assert result.exit_code == expect, f"{args}: {result.exit_code}\n{result.output}"
        return result

    run.url = url
    return run
