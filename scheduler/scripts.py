"""Institutions' own code: packing a working directory, checking it, and running the command.

Invariants:
- A working directory travels as a gzip'd tar of regular files and directories only: no
  links, devices, absolute paths or '..'; at most ARCHIVE_MAX_BYTES packed,
  UNPACKED_MAX_BYTES unpacked and MAX_ENTRIES entries. The CLI checks before it sends,
  the server when it receives, the task again before it unpacks; over a limit is one line.
- The command runs as a subprocess of the job's Ray task, in the attempt's own copy of
  the directory, in a session of its own, and is killed if its Ray worker dies
  (PR_SET_PDEATHSIG). Its environment is built from an allow-list: PATH, locale, the GPU
  Ray assigned, and FAIRGPU_JOB_ID, FAIRGPU_ATTEMPT, FAIRGPU_SLICES,
  FAIRGPU_MEMORY_FRACTION, FAIRGPU_CHECKPOINT_DIR; never the database URL or a token.
  scheduler/script_site comes first on its PYTHONPATH, so the slice's memory cap applies
  when the script imports PyTorch or TensorFlow.
- Its stdout and stderr go to the attempt's log. Exit status 0 is success; any other
  status, or a signal, fails the job with the status in the reason. Its process tree's
  NVML peak memory and the visible GPUs' utilisation are measured as for the built-in
  models (workloads.measure.NvmlProcessPeak).
- When the server asks for a checkpoint (a preemption or a drain), the command gets
  SIGTERM and the grace period the server allows; its exit then ends the attempt as
  preempted, never as a failure (ScriptStopped), and the next attempt finds
  FAIRGPU_CHECKPOINT_DIR as the script left it.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ARCHIVE_MAX_BYTES = 20 << 20
UNPACKED_MAX_BYTES = 200 << 20
MAX_ENTRIES = 10_000
SKIPPED = (".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache")
SITE_DIR = Path(__file__).with_name("script_site")
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
              "ROCR_VISIBLE_DEVICES", "FAIRGPU_NVML_MODULE")


class ArchiveError(ValueError):
    """A working directory that cannot travel (one line)."""


class ScriptFailed(RuntimeError):
    """The command exited with a non-zero status or was killed by a signal."""


class ScriptStopped(RuntimeError):
    """The command stopped because the server asked it to (a preemption or a drain)."""


@dataclass(frozen=True)
class ArchiveInfo:
    sha256: str
    packed_bytes: int
    unpacked_bytes: int
    entries: int


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


# -- packing and checking -------------------------------------------------------------------
def pack(directory: str | os.PathLike) -> bytes:
    """The CLI's side: `directory` as a gzip'd tar (skipping .git, caches and virtualenvs)."""
    root = Path(directory)
    if not root.is_dir():
        raise ArchiveError(f"working directory {directory} is not a directory")
    buf = io.BytesIO()
    total = entries = 0
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if any(part in SKIPPED for part in rel.parts) or path.suffix == ".pyc":
                continue
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise ArchiveError(f"working directory holds {rel}, which is not a regular file or directory")
            entries += 1
            total += path.stat().st_size if path.is_file() else 0
            if total > UNPACKED_MAX_BYTES or entries > MAX_ENTRIES:
                raise ArchiveError(f"working directory {directory} is over the limit of {_mib(UNPACKED_MAX_BYTES)} "
                                   f"or {MAX_ENTRIES:,} files")
            tar.add(path, arcname=str(rel), recursive=False)
            if buf.tell() > ARCHIVE_MAX_BYTES:
                break
    data = buf.getvalue()
    if len(data) > ARCHIVE_MAX_BYTES:
        raise ArchiveError(f"working directory {directory} packs to over {_mib(ARCHIVE_MAX_BYTES)} "
                           f"(the limit); leave data sets out and read them from shared storage")
    return data


def check_archive(data: bytes) -> ArchiveInfo:
    """The server's side: refuse anything but a safe, bounded tar.gz."""
    if len(data) > ARCHIVE_MAX_BYTES:
        raise ArchiveError(f"working directory archive is {_mib(len(data))}, over the limit of "
                           f"{_mib(ARCHIVE_MAX_BYTES)}")
    total = entries = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for m in tar:
                entries += 1
                name = Path(m.name)
                if name.is_absolute() or ".." in name.parts:
                    raise ArchiveError(f"working directory archive holds an unsafe path: {m.name[:100]}")
                if not (m.isfile() or m.isdir()):
                    raise ArchiveError(f"working directory archive holds {m.name[:100]}, which is not a regular file")
                total += m.size
                if total > UNPACKED_MAX_BYTES or entries > MAX_ENTRIES:
                    raise ArchiveError(f"working directory unpacks to over {_mib(UNPACKED_MAX_BYTES)} or "
                                       f"{MAX_ENTRIES:,} files (the limits)")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"working directory archive is not a tar.gz: {exc}") from None
    return ArchiveInfo(hashlib.sha256(data).hexdigest(), len(data), total, entries)


def unpack(archive: Path, dest: Path) -> None:
    """The task's side: a fresh copy of the working directory at `dest` (checked again)."""
    data = archive.read_bytes()
    check_archive(data)
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    dest.mkdir(parents=True, mode=0o700)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")


# -- running --------------------------------------------------------------------------------
def script_env(*, job_id: int, attempt: int, slices: int, memory_fraction: float, checkpoint_dir: Path,
               workdir: Path, base: dict | None = None) -> dict[str, str]:
    """The command's environment: an allow-list of the worker's, plus fairgpu's variables."""
    base = dict(os.environ if base is None else base)
    env = {k: base[k] for k in PASSED_ENV if k in base}
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    env.update({
        "HOME": str(workdir), "TMPDIR": str(workdir), "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join((str(SITE_DIR), str(workdir))),
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
        on_stop: Callable[[], None] = lambda: None, poll_s: float = 0.2) -> dict:
    """Run `command`; its output goes to `log` (a file-like). Returns what is measured of
    it, raises ScriptFailed on a non-zero status or a signal, ScriptStopped after the
    server asked it to stop (it got SIGTERM; `on_stop` runs once it exited)."""
    started = time.monotonic()
    try:
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as exc:
        raise ScriptFailed(f"cannot start {command[0]!r}: {exc.strerror or exc}") from None
    reader = threading.Thread(target=_copy, args=(child.stdout, log), daemon=True)
    reader.start()
    from workloads.measure import NvmlProcessPeak

    nvml = NvmlProcessPeak(interval_s=0.5, pids=lambda: process_tree(child.pid))
    nvml.start()
    stopping = False
    while child.poll() is None:
        if not stopping and stop_requested():
            stopping = True
            _signal(child, signal.SIGTERM)
            print("fairgpu: stop requested (preemption or shutdown): sent SIGTERM", file=log, flush=True)
        time.sleep(poll_s)
    reader.join(timeout=5)
    peak = nvml.stop()
    code = child.returncode
    if stopping:
        on_stop()
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


def _signal(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass


def _copy(stream, log) -> None:
    for line in iter(stream.readline, b""):
        log.write(line.decode("utf-8", errors="replace"))
    stream.close()
