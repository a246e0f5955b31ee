"""`pip install .` with no extras is the institutions' client: in a fresh venv it has no
server (no sqlalchemy, no Ray), `fairgpu --help` works, every institution command runs
against a real server, and a server command names the extra it needs.

Builds the venv once for the module from the working tree's files (tracked and
untracked, as git lists them), through pip's configured index: about 20 s on the
2-core machine under load (docs/benchmarks.md, "CLI start")."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    """A new venv with `pip install .` (no extras); its bin/ folder."""
    base = tmp_path_factory.mktemp("fresh")
    src = base / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    bin_dir = base / "venv" / "bin"
    r = subprocess.run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check", str(src)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return bin_dir


def test_the_plain_install_is_the_client_only(fresh):
    r = subprocess.run([str(fresh / "python"), "-c", "import importlib.util as u; "
                        "print([m for m in ('sqlalchemy', 'sqlmodel', 'ray', 'numpy', 'fastapi', 'httpx', 'torch') "
                        "if u.find_spec(m)])"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "[]"), r.stderr
    r = subprocess.run([str(fresh / "fairgpu"), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "submit" in r.stdout and "jobs" in r.stdout, r.stderr


def test_every_institution_command_runs_against_a_server(fresh, live, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRGPU_")}
    env.update(FAIRGPU_URL=live.url, FAIRGPU_TOKEN=live.tokens["a"], XDG_CONFIG_HOME=str(tmp_path / "cfg"))

    def fairgpu(*argv: str, code: int = 0) -> str:
        r = subprocess.run([str(fresh / "fairgpu"), *argv], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == code, (argv, r.stdout[-1000:], r.stderr[-1000:])
        return r.stdout if code == 0 else r.stderr

    assert "logged in to" in fairgpu("login", "--url", live.url, "--token", live.tokens["a"])
    job_id = json.loads(fairgpu("submit", "hold", "--seconds", "60", "--slices", "1", "--account", "uni-a/nlp",
                                "--time", "5m", "--json"))["id"]
    assert [j["id"] for j in json.loads(fairgpu("jobs", "--json"))] == [job_id]
    assert "uni-a/nlp" in fairgpu("jobs")
    assert json.loads(fairgpu("job", "show", str(job_id), "--json"))["time_limit_s"] == 300
    assert "uni-a/nlp" in fairgpu("share") and "uni-a/nlp" in fairgpu("share", "--explain")
    assert [r["account"] for r in json.loads(fairgpu("report", "--json"))][0] == "uni-a"
    assert fairgpu("cancel", str(job_id)).strip() == f"job {job_id} CANCELLED"
    assert "cancelled" in fairgpu("logs", str(job_id))
    assert "no job 987654" in fairgpu("job", "show", "987654", code=1)


def test_a_server_command_names_its_extra(fresh, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAIRGPU_")}
    for argv in (("up", "--port", "0"), ("admin", "account", "list")):
        r = subprocess.run([str(fresh / "fairgpu"), *argv], env=env, capture_output=True, text=True, timeout=60,
                           cwd=tmp_path)
        assert r.returncode == 1, (argv, r.stderr[-1500:])
        (line,) = r.stderr.strip().splitlines()
        assert re.fullmatch(r"Error: this command needs (\w+), which fairgpu's 'server' extra installs: "
                            r"pip install 'fairgpu\[server\]'", line), (argv, line)
