"""scheduler.runtime.sandbox on this machine, without Ray: real bwrap sandboxes running real
commands. What the sandbox shows and hides, the limits under both mechanisms (a cgroup
where one can be made, rlimits always), the log copier's bound, and the GPU device
nodes chosen for the GPUs Ray assigned (on the NVML stand-in, with stand-in nodes)."""
from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import pytest

import fake_nvml
from scheduler.runtime import sandbox, scripts

pytestmark = pytest.mark.skipif(not sandbox.probe().ok, reason=f"no sandbox here: {sandbox.probe().why}")


class Log(io.StringIO):
    """A log that remembers its largest single write (the copier's piece)."""

    largest = 0

    def write(self, text: str) -> int:
        self.largest = max(self.largest, len(text))
        return super().write(text)

    def tail(self) -> str:
        return self.getvalue()[-20000:]


def _run(tmp_path: Path, code: str, *, limits=sandbox.Limits(), hide=(), cgroups=True, args=()):
    work, ck = tmp_path / "work", tmp_path / "ck"
    work.mkdir(exist_ok=True)
    ck.mkdir(exist_ok=True)
    (work / "main.py").write_text(code)
    command = [sys.executable, "main.py", *args]
    box = sandbox.prepare(command, workdir=work, checkpoint_dir=ck, site_dir=scripts.SITE_DIR, limits=limits,
                          cgroup_name=f"test-{os.getpid()}-{id(work)}", hide=hide, cgroups=cgroups)
    env = scripts.script_env(job_id=1, attempt=1, slices=1, memory_fraction=0.25, checkpoint_dir=sandbox.CHECKPOINT,
                             workdir=sandbox.WORK, site_dir=sandbox.SITE)
    log = Log()
    try:
        result = scripts.run(command, cwd=work, env=env, log=log, stop_requested=lambda: False, sandbox=box,
                             memory_note="a test's limit")
    except scripts.ScriptFailed as exc:
        return exc, log
    return result, log


def test_the_view_holds_its_own_folders_and_the_system_only(tmp_path):
    code = """
import os
print("ids", os.getuid(), os.getpid(), os.getcwd())
print("fairgpu", sorted(os.listdir("/fairgpu")))
print("tmp", os.listdir("/tmp"), oct(os.stat("/tmp").st_mode & 0o7777))
open(os.path.join(os.environ["FAIRGPU_CHECKPOINT_DIR"], "saved"), "w").write("kept")
print("host tmp seen:", os.path.exists(%r))
print("caps", [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1])
""" % str(tmp_path)
    result, log = _run(tmp_path, code)
    out = log.getvalue()
    assert result["exit_code"] == 0, out
    assert "ids 1000 2 /fairgpu/work" in out  # uid 1000, PID 2 in its own namespace (bwrap is 1)
    assert "fairgpu ['checkpoint', 'site', 'work']" in out
    assert "0o1777" in out and "ck" not in out.split("tmp ")[1].split("]")[0]  # private (a bound root's mount point may show)
    assert "host tmp seen: False" in out  # the host's /tmp (and this test's folder) is not there
    assert "caps 0000000000000000" in out
    assert (tmp_path / "ck" / "saved").read_text() == "kept"  # the checkpoint folder is the job's own


def test_a_state_directory_under_a_bound_folder_is_covered(tmp_path):
    """A state directory inside the Python environment (bound read-only) shows empty."""
    secret_dir = Path(tempfile.mkdtemp(prefix="fg-state-", dir=sys.prefix))
    try:
        (secret_dir / "admin.token").write_text("fg_admin_secret")
        code = f"import os; print('inside:', os.listdir({str(secret_dir)!r}))"
        shown, log = _run(tmp_path, code)
        assert "inside: ['admin.token']" in log.getvalue()  # without `hide` it would show
        hidden, log = _run(tmp_path, code, hide=(str(secret_dir),))
        assert hidden["exit_code"] == 0 and "inside: []" in log.getvalue(), log.getvalue()
    finally:
        (secret_dir / "admin.token").unlink()
        secret_dir.rmdir()


HOG = """
chunks = []
for i in range(40):
    chunks.append(bytearray(32 << 20))
    print("holding", (i + 1) * 32, "MiB", flush=True)
"""


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup-or-rlimit", "rlimit"])
def test_host_memory_past_the_limit_ends_the_attempt_with_a_reason(tmp_path, cgroups):
    exc, log = _run(tmp_path, HOG, limits=sandbox.Limits(memory_bytes=256 << 20), cgroups=cgroups)
    assert isinstance(exc, scripts.HostMemoryExceeded), (exc, log.getvalue()[-500:])
    assert "host memory" in str(exc) and "0.25 GiB" in str(exc) and "a test's limit" in str(exc)
    if not cgroups or sandbox.probe().limits == "rlimit":
        assert "RLIMIT_DATA" in str(exc) and "MemoryError" in log.getvalue()
    else:
        assert "memory cgroup" in str(exc)
    assert "holding 384 MiB" not in log.getvalue()  # stopped before it held half as much again


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup-or-rlimit", "rlimit"])
def test_processes_past_the_limit_cannot_start_and_limits_cannot_be_raised(tmp_path, cgroups):
    code = """
import resource, threading
stop, n = threading.Event(), 0
try:
    for _ in range(100):
        threading.Thread(target=stop.wait).start()
        n += 1
except RuntimeError:
    pass
stop.set()
print("threads", n)
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("raised")
except (ValueError, OSError) as exc:
    print("not raised:", exc)
"""
    result, log = _run(tmp_path, code, limits=sandbox.Limits(processes=32), cgroups=cgroups)
    out = log.getvalue()
    assert result["exit_code"] == 0, out
    started = int(out.split("threads ")[1].split()[0])
    assert "not raised" in out and "\nraised" not in out
    if not cgroups and os.geteuid() == 0:  # RLIMIT_NPROC does not bind host uid 0: said, not claimed
        assert started == 100
        assert "process limit NOT held" in sandbox.Probe(True, limits="rlimit").describe()
        return
    assert 20 <= started < 32, out  # the limit counts threads, and a few of its own processes


def test_nothing_it_started_survives_the_attempt(tmp_path):
    tag = f"fg-orphan-{os.getpid()}-{id(tmp_path)}"
    code = f"""
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", {tag!r}])
    os._exit(0)
os.wait()
print("left a sleeper", flush=True)
"""
    result, log = _run(tmp_path, code)
    assert result["exit_code"] == 0 and "left a sleeper" in log.getvalue()
    alive = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, tag)]
    assert alive == []


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_line_without_an_end_reaches_the_log_in_bounded_pieces(tmp_path):
    code = "import sys\nsys.stdout.write('é' * (3 << 20))\nsys.stdout.flush()\n"  # 6 MiB, no newline
    result, log = _run(tmp_path, code)
    assert result["exit_code"] == 0
    assert log.getvalue() == "é" * (3 << 20)  # whole, and no character cut in two
    assert log.largest <= scripts.LOG_CHUNK


def test_only_the_assigned_gpus_device_nodes_are_bound(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    fake_nvml.configure([dict(fake_nvml.t4(i), minor=2 - i) for i in range(3)])  # minors in reverse
    try:
        nodes, inside = sandbox.gpu_devices("1", nvml=fake_nvml, dev=str(dev))
        assert nodes == (f"{dev}/nvidiactl", f"{dev}/nvidia-uvm", f"{dev}/nvidia1")
        assert inside == "GPU-fake-0001"
        nodes, inside = sandbox.gpu_devices("GPU-fake-0000,GPU-fake-0002", nvml=fake_nvml, dev=str(dev))
        assert nodes[-2:] == (f"{dev}/nvidia2", f"{dev}/nvidia0") and inside == "GPU-fake-0000,GPU-fake-0002"
    finally:
        fake_nvml.configure()
    assert sandbox.gpu_devices("0", dev=str(tmp_path / "none")) == ((), "0")  # a CPU-only box: as it was


def test_cgroups_of_dead_workers_are_swept(tmp_path):
    if not sandbox.probe().limits.startswith("cgroup"):
        pytest.skip(f"no cgroup can be made here (limits by {sandbox.probe().limits}): nothing to sweep")  # as a user
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: a worker that died before closing its cgroup
    make = sandbox._make_v1 if sandbox.probe().limits == "cgroup v1" else sandbox._make_v2
    stale = make(f"{sandbox.CGROUP_PREFIX}9-1-{gone.pid}", sandbox.Limits(1 << 30, 64))
    live = make(f"{sandbox.CGROUP_PREFIX}9-2-{os.getpid()}", sandbox.Limits(1 << 30, 64))
    try:
        assert sandbox.sweep_stale_cgroups() >= 1
        assert not any(d.exists() for d in stale.dirs) and all(d.exists() for d in live.dirs)
    finally:
        live.remove()
        stale.remove()
