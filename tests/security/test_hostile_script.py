"""An institution's hostile script against a running `fairgpu up` (issue 21), as root and
as an unprivileged user: tests/security/evil.py tries, from inside its own job, to read
the admin token, write the database, read the server's descriptors, read and forge
another institution's files and results, reach the API and PostgreSQL, raise its limits,
start more threads than it may, kill the server and everything it can see, and leave a
double-forked `setsid` process behind. A third job holds more host memory than
`host_memory_per_slice` allows.

Judged on the host, by effects: every attack line says FAILED (except those judged here:
kill-all and leave-orphan); the victim's job SUCCEEDS with its own output; weights and
the token are unchanged; the server is up; the memory job is FAILED with a reason that
names host memory and its limit; nothing the jobs started is left running (no sandbox,
no tagged orphan, no cgroup)."""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli import main
from scheduler.runtime.sandbox import CGROUP_PREFIX, probe
from service_helpers import Up, admin_client, institution, wait_for, wait_states

HERE = Path(__file__).parent
SITE_DIR = Path(__file__).parents[2] / "scheduler" / "runtime" / "script_site"
VICTIM = """
import os, time
secret = open("secret.txt").read().strip()
open(os.path.join(os.environ["FAIRGPU_CHECKPOINT_DIR"], "state.txt"), "w").write(secret)
print("VICTIM START", secret, flush=True)
deadline = time.time() + float(os.environ.get("HOLD_S", "0") or 0) + {hold}
while time.time() < deadline:
    time.sleep(0.2)
print("VICTIM DONE", secret, flush=True)
"""
HOG = """
chunks = []
for i in range(64):
    chunks.append(bytearray(64 << 20))
    print("holding", (i + 1) * 64, "MiB", flush=True)
"""

pytestmark = pytest.mark.skipif(not probe().ok, reason=f"no sandbox on this machine: {probe().why}")


@pytest.fixture(params=["root", "unprivileged"])
def as_user(request):
    """None (the test's own user, root here) or `nobody`, with what `nobody` needs to run
    this checkout's Python (o+x on the folders above it, restored after)."""
    if request.param == "root":
        yield None
        return
    if os.geteuid() != 0:
        yield None  # already unprivileged: both cases are the same
        return
    opened = []
    path = Path(os.path.realpath(sys.executable)).parent
    while path != path.parent:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(path, mode | stat.S_IXOTH)
            opened.append((path, mode))
        path = path.parent
    try:
        yield "nobody"
    finally:
        for p, mode in opened:
            os.chmod(p, mode)


def _owned_dir(user: str | None) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fg-hostile-"))
    if user:
        pw = pwd.getpwnam(user)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


def _cli(client, *args):
    env = {"FAIRGPU_URL": str(client.base_url), "FAIRGPU_TOKEN": client.headers["Authorization"].split()[1]}
    return CliRunner().invoke(main, list(args), env=env)


def _submit(client, workdir: Path, *command: str) -> int:
    r = _cli(client, "submit", "script", "--slices", "1", "--working-dir", str(workdir), "--json", "--", *command)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["id"]


def _logs(client, job_id: int) -> str:
    r = _cli(client, "logs", str(job_id))
    assert r.exit_code == 0, r.output
    return r.output


def _tagged(tag: str) -> list[int]:
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if tag.encode() in Path(f"/proc/{p}/cmdline").read_bytes():
                    found.append(int(p))
            except OSError:
                pass
    return found


def _cgroups_left() -> list[str]:
    left = []
    for base in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if base.is_dir():
            left += [str(p) for p in base.rglob(f"{CGROUP_PREFIX}*") if p.is_dir()]
    return left


def test_a_hostile_script_stays_inside_its_own_job(as_user, tmp_path):
    state, ray_tmp = _owned_dir(as_user), _owned_dir(as_user)
    up = Up(f"sqlite:///{state / 'fairgpu.db'}", state, gpus=1, user=as_user,
            env={"RAY_TMPDIR": str(ray_tmp), "HOME": str(state)})
    try:
        url = up.wait_up()
        mechanism = up.wait_line(r"scripts on node \S+: (.*)").group(1)
        admin = admin_client(url, state)
        token_before = (state / "admin.token").read_text()
        for key, value in (("host_memory_per_slice", "256MiB"), ("max_processes", "64")):
            r = admin.put(f"/v1/admin/settings/{key}", json={"value": value})
            assert r.status_code == 200, r.text
        victim, evil = institution(admin, "victim-u"), institution(admin, "evil-u")
        for name in ("victim-u", "evil-u"):
            r = admin.patch(f"/v1/admin/accounts/{name}", json={"allow_scripts": True})
            assert r.status_code == 200, r.text

        secret = f"victim-secret-{uuid.uuid4().hex}"
        vdir = tmp_path / "victim"
        vdir.mkdir()
        (vdir / "secret.txt").write_text(secret)
        (vdir / "victim.py").write_text(VICTIM.format(hold=12))
        vid = _submit(victim, vdir, sys.executable, "victim.py")
        wait_for(lambda: secret in _logs(victim, vid), 120, what="the victim's job to start")

        results = state / "results"
        tag = f"FAIRGPU-ORPHAN-{uuid.uuid4().hex}"
        args = {"state_dir": str(state), "db": str(state / "fairgpu.db"), "token": str(state / "admin.token"),
                "server_pid": up.pid, "victim_dir": str(results / str(vid)),
                "victim_result": str(results / str(vid) / "attempt-1.json"),
                "victim_secret_file": str(results / str(vid) / "work-1" / "secret.txt"),
                "api_port": int(url.rsplit(":", 1)[1].strip("/")), "pg_port": 5432, "site_dir": str(SITE_DIR),
                "tag": tag, "threads": 200}
        edir = tmp_path / "evil"
        edir.mkdir()
        shutil.copy(HERE / "evil.py", edir / "evil.py")
        eid = _submit(evil, edir, sys.executable, "evil.py", json.dumps(args))
        hdir = tmp_path / "hog"
        hdir.mkdir()
        (hdir / "hog.py").write_text(HOG)
        hid = _submit(evil, hdir, sys.executable, "hog.py")

        done = wait_states(admin, [vid, eid, hid], timeout=180)
        log = _logs(evil, eid)
        assert "EVIL DONE" in log, log
        attacks = dict(re.findall(r"^ATTACK (\S+) (OK|FAILED)", log, re.M))
        assert len(attacks) >= 20, log
        judged_here = {"kill-all", "leave-orphan"}
        breaches = {k for k, v in attacks.items() if v == "OK" and k not in judged_here}
        assert not breaches, f"attacks that worked: {sorted(breaches)}\n{log}"
        assert secret not in log and token_before.strip() not in log

        # the victim's job succeeded, with its own output; nothing of it was forged
        assert done[vid]["state"] == "SUCCEEDED", done[vid]
        assert done[vid]["result"]["exit_code"] == 0 and "forged" not in done[vid]["result"]
        assert f"VICTIM DONE {secret}" in _logs(victim, vid)
        assert done[eid]["state"] == "SUCCEEDED", done[eid]  # it exited 0: it was stopped, not failed

        # host memory: the kernel stopped the hog at its limit, and the reason says so
        assert done[hid]["state"] == "FAILED", done[hid]
        assert "host memory" in done[hid]["error"] and "0.25 GiB" in done[hid]["error"], done[hid]["error"]

        # the server is up, its token and the weights as they were, nothing left running
        assert up.proc.poll() is None
        assert admin.get("/healthz").status_code == 200
        assert (state / "admin.token").read_text() == token_before
        weights = {a["account"]: a["weight"] for a in admin.get("/v1/admin/accounts").json()}
        assert weights["evil-u"] == 1 and weights["victim-u"] == 1, weights
        wait_for(lambda: not _tagged(tag), 10, what="the orphan to be gone", show=lambda: _tagged(tag))
        wait_for(lambda: not _tagged("/fairgpu/work"), 10, what="no sandbox left", show=lambda: _tagged("/fairgpu/"))
        wait_for(lambda: not _cgroups_left(), 10, what="no cgroup left", show=_cgroups_left)
        print(f"\nmechanism ({as_user or 'root'}): {mechanism}; hog: {done[hid]['error']}; attacks: {attacks}")
    finally:
        up.kill()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
