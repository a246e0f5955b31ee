"""A client command loads nothing of the server: `fairgpu jobs`, `submit`, `job show`,
`share`, `cancel` and `logs`, each run as a real process against a real server, import no
Ray, database layer, numeric or ML library, nor fairgpu's server side. Read from the
process's own `sys.modules` as it exits, so any import counts, however indirect (a
module loaded through importlib too, which `python -X importtime` does not log)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Top-level packages a client command must not import (the `server`, `torch`,
# `tensorflow` and `plot` extras), and fairgpu's own server-side packages.
FORBIDDEN = {"ray", "sqlalchemy", "sqlmodel", "alembic", "psycopg", "numpy", "PIL", "torch", "tensorflow", "keras",
             "fastapi", "starlette", "pydantic", "uvicorn", "httpx", "prometheus_client", "matplotlib", "pynvml"}
FORBIDDEN_OWN = ("scheduler.store", "scheduler.api", "scheduler.loop", "scheduler.runtime.executor",
                 "scheduler.server", "scheduler.sim", "scheduler.metrics", "quota.policy", "quota.state")
# `fairgpu ARGS` as the console script runs it, writing sys.modules to a file at exit.
DRIVER = ("import atexit, json, runpy, sys\n"
          "out = sys.argv.pop(1)\n"
          "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
          "sys.argv[0] = 'fairgpu'\n"
          "runpy.run_module('scheduler.cli', run_name='__main__', alter_sys=True)\n")


def loaded(code_or_argv: list[str], env: dict | None, out: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    r = subprocess.run([sys.executable, "-c", DRIVER, str(out), *code_or_argv], env=env, capture_output=True,
                       text=True, timeout=120)
    return r, set(json.loads(out.read_text())) if out.exists() else set()


@pytest.fixture
def fairgpu(live, tmp_path):
    """Run `fairgpu ARGS` as its own process, as an institution: (result, modules loaded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRGPU_")}
    env.update(FAIRGPU_URL=live.url, FAIRGPU_TOKEN=live.tokens["a_vision"], XDG_CONFIG_HOME=str(tmp_path / "cfg"))

    def run(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
        out = tmp_path / "modules.json"
        out.unlink(missing_ok=True)
        return loaded(list(argv), env, out)

    return run


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN_OWN))


def test_client_commands_import_nothing_of_the_server(fairgpu):
    r, modules = fairgpu("submit", "hold", "--seconds", "600", "--slices", "1", "--time", "10m", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "scheduler.cli.jobs" in modules and "http.client" in modules  # the log is read right
    assert heavy(modules) == []
    job_id = str(json.loads(r.stdout.splitlines()[-1])["id"])
    for argv in (("jobs",), ("jobs", "--all", "--json"), ("job", "show", job_id), ("job", "show", job_id, "--json"),
                 ("share",), ("share", "--json"), ("logs", job_id), ("cancel", job_id), ("--help",)):
        r, modules = fairgpu(*argv)
        assert r.returncode == 0, (argv, r.stderr[-2000:])
        assert heavy(modules) == [], argv


def test_refusals_stay_light_too(fairgpu):
    """Errors, the client's own (a bad --time) and the server's (no such job), are one line
    and load no more than success does."""
    for argv, message in ((("submit", "hold", "--seconds", "1", "--slices", "1", "--time", "soon"), "got 'soon'"),
                          (("job", "show", "987654"), "no job 987654"),
                          (("submit", "hold", "--seconds", "1", "--slices", "1", "--account", "uni-b"), "uni-b")):
        r, modules = fairgpu(*argv)
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert r.returncode == 1 and len(errors) == 1 and message in errors[0], (argv, r.stderr[-1500:])
        assert heavy(modules) == [], argv


def test_the_check_sees_the_server_where_a_command_loads_it(tmp_path):
    """The same reading finds the database layer in a command that opens the database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRGPU_")}
    env["FAIRGPU_DB"] = f"sqlite:///{tmp_path / 'admin.db'}"
    r, modules = loaded(["admin", "account", "list", "--json"], env, tmp_path / "modules.json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"sqlalchemy", "scheduler.store"} <= set(heavy(modules))
