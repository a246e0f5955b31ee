"""Institutions' own code: packing a working directory, checking it, and running the command.

Invariants:
- A working directory travels as scheduler.runtime.archive packs, checks and unpacks it (the
  names below that come from there are kept for older callers).
- The command runs as a subprocess of the job's Ray task, in the attempt's own copy of
  the directory. Given a `scheduler.runtime.sandbox.Sandboxed`, it runs inside that sandbox
  (bubblewrap: its own namespaces, no view of the state directory, kernel limits on host
  memory and processes); `Sandboxed.close()` then ends everything it started when the
  attempt ends, for any reason. Without one (`--unsandboxed-scripts` on a node where no
  sandbox starts) it runs in a session of its own and is killed if its Ray worker dies
  (PR_SET_PDEATHSIG). Its environment is built from an allow-list: PATH, locale, the GPU
  Ray assigned, and FAIRGPU_JOB_ID, FAIRGPU_ATTEMPT, FAIRGPU_SLICES,
  FAIRGPU_MEMORY_FRACTION, FAIRGPU_CHECKPOINT_DIR; never the database URL or a token.
  scheduler/runtime/script_site comes first on its PYTHONPATH, so the slice's memory cap applies
  when the script imports PyTorch or TensorFlow.
- Its stdout and stderr go to the attempt's log, copied in pieces of at most
  LOG_CHUNK bytes (a line without an end never sits whole in memory). Exit status 0 is success; any other
  status, or a signal, fails the job with the status in the reason. Its process tree's
  NVML peak memory and the visible GPUs' utilisation are measured as for the built-in
  models (workloads.measure.NvmlProcessPeak). The same readings feed the GPU memory
  watchdog (scheduler.runtime.gpu_watchdog): past its limit for longer than the grace, the whole
  process tree is killed and the attempt fails (GpuMemoryExceeded, figures in the reason).
  An attempt the kernel stopped at its host memory limit fails with HostMemoryExceeded,
  whose reason names host memory, the limit and what enforced it.
- When the server asks for a checkpoint (a preemption or a drain), or the attempt finds
  itself fenced, the command gets SIGTERM and `grace_s`; still running after that, its
  whole tree is killed. Its exit then ends the attempt as stopped, never as a failure
  (ScriptStopped); `on_stop(status)` runs once it exited (the task commits the
  checkpoint folder there when the status is 0; see scheduler.runtime.tasks).
- FAIRGPU_CHECKPOINT_DIR is the attempt's own folder. A script asks for its contents to
  become the job's checkpoint by creating COMMIT_REQUEST in it and waiting until it is
  gone (script_site/fairgpu_checkpoint.py does both); `on_poll`, called every `poll_s`,
  is where the task answers.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from scheduler.runtime.archive import (  # noqa: F401 - the working directory's names, kept here too
    ARCHIVE_MAX_BYTES,
    MAX_ENTRIES,
    SKIPPED,
    UNPACKED_MAX_BYTES,
    ArchiveError,
    ArchiveInfo,
    check_archive,
    pack,
    unpack,
)
from scheduler.runtime.gpu_watchdog import GpuLimit, GpuWatchdog, Violation

LOG_CHUNK = 64 * 1024
COMMIT_REQUEST = ".fairgpu-commit"  # created in FAIRGPU_CHECKPOINT_DIR: "make this a checkpoint"

SITE_DIR = Path(__file__).with_name("script_site")
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
              "ROCR_VISIBLE_DEVICES", "FAIRGPU_NVML_MODULE")


class ScriptFailed(RuntimeError):
    """The command exited with a non-zero status or was killed by a signal."""


class ScriptStopped(RuntimeError):
    """The command stopped because the server asked it to (a preemption or a drain)."""


class GpuMemoryExceeded(ScriptFailed):
    """The attempt's processes held more GPU memory than their share for longer than the
    grace, and were killed (scheduler.runtime.gpu_watchdog). Pickles with its figures (Ray)."""

    def __init__(self, violation: Violation):
        super().__init__(violation.reason())
        self.violation = violation

    def __reduce__(self):
        return type(self), (self.violation,)


class HostMemoryExceeded(ScriptFailed):
    """The attempt ran into its host memory limit (a cgroup's, or RLIMIT_DATA's)."""


def host_memory_reason(limit_bytes: int, per_slice: str, mechanism: str, status: str) -> str:
    return (f"host memory over the job's limit: the attempt may hold {limit_bytes / 2**30:.2f} GiB of host "
            f"memory ({per_slice}), enforced by {mechanism}; it was stopped ({status})")


# -- running --------------------------------------------------------------------------------
def script_env(*, job_id: int, attempt: int, slices: int, memory_fraction: float, checkpoint_dir: Path | str,
               workdir: Path | str, base: dict | None = None, site_dir: Path | str = SITE_DIR) -> dict[str, str]:
    """The command's environment: an allow-list of the worker's, plus fairgpu's variables.
    Paths are as the command sees them (inside a sandbox: /fairgpu/...)."""
    base = dict(os.environ if base is None else base)
    env = {k: base[k] for k in PASSED_ENV if k in base}
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    env.update({
        "HOME": str(workdir), "TMPDIR": "/tmp" if str(workdir).startswith("/fairgpu/") else str(workdir),
        "PYTHONUNBUFFERED": "1", "USER": "fairgpu", "LOGNAME": "fairgpu",
        "PYTHONPATH": os.pathsep.join((str(site_dir), str(workdir))),
        "FAIRGPU_JOB_ID": str(job_id), "FAIRGPU_ATTEMPT": str(attempt), "FAIRGPU_SLICES": str(slices),
        "FAIRGPU_MEMORY_FRACTION": f"{memory_fraction:g}", "FAIRGPU_CHECKPOINT_DIR": str(checkpoint_dir),
    })
    return env


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run(command: list[str], *, cwd: Path, env: dict[str, str], log, stop_requested: Callable[[], bool],
        on_stop: Callable[[int], None] = lambda _status: None, poll_s: float = 0.2,
        gpu_limit: GpuLimit | None = None, sandbox=None, memory_note: str = "",
        on_poll: Callable[[], None] = lambda: None, grace_s: float | None = None) -> dict:
    """Run `command`; its output goes to `log` (a file-like). Returns what is measured of
    it, raises ScriptFailed on a non-zero status or a signal, ScriptStopped after the
    server asked it to stop (it got SIGTERM, and SIGKILL if it still ran `grace_s` later;
    `on_stop(status)` runs once it exited), GpuMemoryExceeded after its process tree was
    killed for holding more GPU memory than `gpu_limit` allows (None: nothing is
    enforced), and HostMemoryExceeded when the sandbox's host memory limit stopped it.
    `on_poll()` runs every `poll_s` while it runs. `sandbox` (a
    scheduler.runtime.sandbox.Sandboxed, built for this command) runs it confined; it is
    closed here, whatever happens. `memory_note` says how the host memory limit was set
    (for the reason)."""
    started = time.monotonic()
    if sandbox is not None:
        argv, preexec, fds, env = sandbox.argv, sandbox.preexec, sandbox.fds, {**env, **sandbox.env_overrides}
    else:
        argv, preexec, fds = command, _die_with_parent, ()
    child = None
    try:
        try:
            child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec,
                                     pass_fds=fds)
        except OSError as exc:
            raise ScriptFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        return _watch(child, command, log=log, stop_requested=stop_requested, on_stop=on_stop, poll_s=poll_s,
                      gpu_limit=gpu_limit, sandbox=sandbox, memory_note=memory_note, started=started,
                      on_poll=on_poll, grace_s=grace_s)
    finally:
        if sandbox is not None:
            sandbox.close(child)  # the outer bwrap (the kernel ends all the namespace held), its cgroup, its fds
        elif child is not None and child.poll() is None:
            kill_tree(child)


def _watch(child, command, *, log, stop_requested, on_stop, poll_s, gpu_limit, sandbox, memory_note, started,
           on_poll, grace_s):
    reader = threading.Thread(target=_copy, args=(child.stdout, log), daemon=True)
    reader.start()
    from workloads.measure import NvmlProcessPeak

    watchdog = GpuWatchdog(gpu_limit) if gpu_limit is not None else None
    nvml = NvmlProcessPeak(interval_s=0.5, pids=lambda: process_tree(child.pid),
                           on_sample=watchdog.observe if watchdog is not None else None)
    nvml.start()
    stopping = over = killed = False
    stop_at = 0.0
    while child.poll() is None:
        if watchdog is not None and watchdog.violation is not None and not over:
            over = True
            kill_tree(child)
            print(f"fairgpu: killed: {watchdog.violation.reason()}", file=log, flush=True)
        elif not stopping and stop_requested():
            stopping, stop_at = True, time.monotonic()
            _terminate(child, sandboxed=sandbox is not None)
            print("fairgpu: stop requested (preemption, shutdown or fence): sent SIGTERM", file=log, flush=True)
        elif stopping and not killed and grace_s is not None and time.monotonic() - stop_at >= grace_s:
            killed = True
            kill_tree(child)
            print(f"fairgpu: still running {grace_s:g} s after SIGTERM: killed", file=log, flush=True)
        elif not stopping:
            on_poll()
        time.sleep(poll_s)
    if sandbox is not None:
        sandbox.close(child)  # whatever it left behind ends with the sandbox, before the log is read
    reader.join(timeout=5)
    peak = nvml.stop()
    code = child.returncode
    if sandbox is not None and code > 128:  # bwrap reports a signal as 128 + its number, as shells do
        code = -(code - 128)
    if killed:
        code = -signal.SIGKILL
    if over:
        raise GpuMemoryExceeded(watchdog.violation)
    if sandbox is not None and code != 0 and sandbox.memory_exceeded(_tail(log)):
        raise HostMemoryExceeded(host_memory_reason(sandbox.limits.memory_bytes or 0, memory_note,
                                                    sandbox.describe_limits(), describe_status(code)))
    if stopping:
        on_stop(code)
        raise ScriptStopped(f"stopped on request ({describe_status(code)})")
    if code != 0:
        raise ScriptFailed(describe_status(code))
    return {"exit_code": 0, "command": command, "wall_time_s": time.monotonic() - started, "pid": child.pid,
            "nvml_peak_memory_bytes": peak, **nvml.utilization_summary(),
            "notes": [n for n in (nvml.note,) if n]}


def process_tree(pid: int) -> set[int]:
    """`pid` and its descendants (from /proc), so a script's subprocesses count too."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, ()))
    return out


def describe_status(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit code {code}"


def kill_tree(child: subprocess.Popen) -> None:
    """SIGKILL the command's session and every descendant, those that left it too."""
    tree = process_tree(child.pid)
    _signal(child, signal.SIGKILL)
    for pid in tree - {child.pid}:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _terminate(child: subprocess.Popen, *, sandboxed: bool) -> None:
    """SIGTERM the command (a checkpoint request). In a sandbox the command is not in the
    outer bwrap's process group (bwrap starts a new session for it) and bwrap passes no
    signal on, so every process of the tree that is not bwrap itself gets it."""
    if not sandboxed:
        _signal(child, signal.SIGTERM)
        return
    for pid in process_tree(child.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "bwrap":
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass


def _tail(log) -> str:
    tail = getattr(log, "tail", None)
    try:
        return tail() if callable(tail) else ""
    except Exception:
        return ""


def _signal(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass


def _copy(stream, log) -> None:
    """Copy the command's output in pieces of at most LOG_CHUNK bytes, so a line without
    an end (or a very long one) never sits whole in memory."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a piece may end inside a character
    for piece in iter(lambda: stream.readline(LOG_CHUNK), b""):
        log.write(decoder.decode(piece))
    log.write(decoder.decode(b"", final=True))
    stream.close()
