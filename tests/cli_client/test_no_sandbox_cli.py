"""`fairgpu submit script` against a server where no sandbox can start: exit 1 with the
server's one line, and nothing uploaded or queued."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from live_server import now, start
from scheduler.cli import main
from scheduler.services.script_gate import SandboxStatus

WHY = "bwrap cannot create namespaces here (setting up uid map: Permission denied)"


def seed_lab(engine) -> dict[str, str]:
    from scheduler.services import accounts, auth, capacity
    from scheduler.store import session_scope

    with session_scope(engine) as s:
        capacity.set_node(s, node="gpu-box-1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=now())
        accounts.add_account(s, "lab", weight=1, allow_scripts=True)
    with session_scope(engine) as s:
        return {"lab": auth.issue_token(s, account="lab", name="lab", expires_s=None, at=now())}


@pytest.fixture
def refusing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    server = start(tmp_path / "fairgpu.db", seed=seed_lab, results_dir=results,
                   sandbox_status=lambda: SandboxStatus(available=False, why=WHY))
    yield server, results
    server.stop()


def test_submit_script_exits_1_with_the_servers_line(refusing, tmp_path):
    server, results = refusing
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print(1)\n")
    env = {"FAIRGPU_URL": server.url, "FAIRGPU_TOKEN": server.tokens["lab"],
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "FAIRGPU_DB": None}
    r = CliRunner().invoke(main, ["submit", "script", "--slices", "1", "--working-dir", str(work), "--",
                                  "python", "train.py"], env=env)
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (f"Error: no sandbox can start on this server's nodes ({WHY}); script jobs are "
                                "refused unless the server runs with --unsandboxed-scripts")
    jobs = CliRunner().invoke(main, ["jobs", "--all", "--json"], env=env)
    assert jobs.exit_code == 0 and json.loads(jobs.stdout) == []
    assert list(results.rglob("*")) == []


def test_the_server_is_asked_before_the_directory_is_packed(refusing, tmp_path):
    """The directory holds a FIFO, which packing refuses: the server's refusal (asked first,
    with no body) is what the user sees, so a refused account costs no packing or upload."""
    import os

    server, results = refusing
    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "pipe")
    env = {"FAIRGPU_URL": server.url, "FAIRGPU_TOKEN": server.tokens["lab"],
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "FAIRGPU_DB": None}
    r = CliRunner().invoke(main, ["submit", "script", "--slices", "1", "--working-dir", str(work), "--",
                                  "python", "train.py"], env=env)
    assert r.exit_code == 1 and r.stderr.startswith("Error: no sandbox can start on this server's nodes"), r.output
    assert list(results.rglob("*")) == []
