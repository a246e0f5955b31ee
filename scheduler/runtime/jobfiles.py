"""A job's files in the shared state directory: one directory per job.

    <root>/<job id>/attempt-<n>.json      the attempt's result, or its fence
    <root>/<job id>/attempt-<n>.started   created as the attempt's task starts
    <root>/<job id>/attempt-<n>.alive     touched by the task every FENCE_CHECK_S while it runs
    <root>/<job id>/attempt-<n>.ended     written by the task as it stops, however it stops:
                                          {"how", "started_at", "ended_at", "why"}
    <root>/<job id>/attempt-<n>.log       the task's own output (capped at LOG_CAP_BYTES)
    <root>/<job id>/progress.json         step, steps, samples/s, ETA (rewritten, <= 1/s)
    <root>/<job id>/checkpoint/           the job's checkpoint, kept across attempts: complete
                                          generations only (workloads.generations)
    <root>/<job id>/ckpt-<n>/             a script attempt's FAIRGPU_CHECKPOINT_DIR, while it runs
    <root>/<job id>/checkpoint.request    the server asks the task to checkpoint now
    <root>/<job id>/workdir.tar.gz        a script job's working directory, as submitted
    <root>/<job id>/work-<n>/             attempt n's copy of it, while the command runs
    <root>/uploads/<account id>/<sha256>.tar.gz   a working directory uploaded, not yet submitted

Invariants:
- A result is published by an exclusive create (a hard link of a finished temp file);
  the server fences an attempt it gives up on by creating the same file first, marked
  `fenced`. Exactly one create wins: an attempt either completed or is run again, never
  both, even if an orphaned worker lives on. A fence is only ever the server's: a task
  that finds one for an attempt the server still runs (`fenced`) has its job queued
  again, not failed (scheduler.loop).
- An attempt learns by itself that it must stop (`superseded`): its fence is there, or a
  later attempt of its job has left a file. The task asks every FENCE_CHECK_S, with no
  server's help, and stops (scheduler.runtime.tasks).
- Whether an attempt still runs is read from its own files (`attempt_alive`): its
  `.ended` marker says it stopped; without one, a heartbeat older than ALIVE_STALE_S says
  its worker died (killed, its node lost).
- A checkpoint becomes visible only when complete (workloads.generations): the task and
  the built-in models write a generation aside and rename it into place, guarded by the
  attempt's fence, so a fenced attempt never writes one over its successor's.
- The task removes `checkpoint.request` once its checkpoint is saved: that is the ack.
- Every file and directory is created owner-only (0600 / 0700).
- When a job ends, `clear` removes its checkpoint, progress, results and markers; its
  logs, fences and end markers stay (a fenced attempt that still runs must keep finding
  its fence; an end marker is the record of when it stopped).
- No Ray, no database: the task and the server both use this module.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

LOG_CAP_BYTES = 1 << 20
PROGRESS_FILE = "progress.json"
REQUEST_FILE = "checkpoint.request"
FENCE_CHECK_S = 2.0  # how often a running task beats its heartbeat and looks for its fence
ALIVE_STALE_S = 3 * FENCE_CHECK_S + 2.0  # a heartbeat older than this: its worker is gone
_ATTEMPT_FILE = re.compile(r"^attempt-(\d+)\.")


class Fenced(RuntimeError):
    """The server gave up on this attempt before it finished; its result does not count."""


def job_dir(root: str | os.PathLike, job_id: int) -> Path:
    return Path(root) / str(job_id)


def result_path(root: str | os.PathLike, job_id: int, attempt: int) -> Path:
    return job_dir(root, job_id) / f"attempt-{attempt}.json"


def started_path(root: str | os.PathLike, job_id: int, attempt: int) -> Path:
    return job_dir(root, job_id) / f"attempt-{attempt}.started"


def log_path(root: str | os.PathLike, job_id: int, attempt: int) -> Path:
    return job_dir(root, job_id) / f"attempt-{attempt}.log"


def alive_path(root: str | os.PathLike, job_id: int, attempt: int) -> Path:
    return job_dir(root, job_id) / f"attempt-{attempt}.alive"


def ended_path(root: str | os.PathLike, job_id: int, attempt: int) -> Path:
    return job_dir(root, job_id) / f"attempt-{attempt}.ended"


def checkpoint_dir(root: str | os.PathLike, job_id: int) -> Path:
    """The job's checkpoint store: complete generations only (workloads.generations)."""
    return job_dir(root, job_id) / "checkpoint"


def attempt_checkpoint_dir(root: str | os.PathLike, job_id: int, attempt: int) -> Path:
    """A script attempt's own FAIRGPU_CHECKPOINT_DIR (filled from the newest generation)."""
    return job_dir(root, job_id) / f"ckpt-{attempt}"


def workdir_archive(root: str | os.PathLike, job_id: int) -> Path:
    return job_dir(root, job_id) / "workdir.tar.gz"


def upload_path(root: str | os.PathLike, account_id: int, sha256: str) -> Path:
    return Path(root) / "uploads" / str(account_id) / f"{sha256}.tar.gz"


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def create_private(path: Path, *, exclusive: bool = False, binary: bool = False):
    """Open `path` for writing, created 0600 (its directory 0700)."""
    ensure_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), "wb" if binary else "w")


# -- results and fences ----------------------------------------------------------------------
def _read_object(path: Path) -> dict | None:
    """A JSON object file's content; None where it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read(root, job_id: int, attempt: int) -> dict | None:
    return _read_object(result_path(root, job_id, attempt))


def read_result(root, job_id: int, attempt: int) -> dict | None:
    """The attempt's result, or None if it has none (or was fenced, or is not a JSON object)."""
    data = _read(root, job_id, attempt)
    return None if data is None or data.get("fenced") else data


def fenced(root, job_id: int, attempt: int) -> bool:
    """Whether the attempt's result file is a fence marker (`settle_attempt`'s)."""
    data = _read(root, job_id, attempt)
    return data is not None and bool(data.get("fenced"))


def settle_attempt(root, job_id: int, attempt: int) -> dict | None:
    """Decide an attempt the server lost track of, once and for all: its result if it
    completed; else fence it (its result can never be published) and return None."""
    try:
        with create_private(result_path(root, job_id, attempt), exclusive=True) as f:
            json.dump({"fenced": True, "at": time.time()}, f)
    except FileExistsError:
        return read_result(root, job_id, attempt)
    return None


def publish_result(root, job_id: int, attempt: int, result: dict) -> None:
    path = result_path(root, job_id, attempt)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with create_private(tmp) as f:
        f.write(json.dumps(result, default=str))
    try:
        os.link(tmp, path)  # exclusive: fails if the server fenced this attempt first
    except FileExistsError:
        raise Fenced(f"job {job_id} attempt {attempt} was given up by the scheduler") from None
    finally:
        tmp.unlink(missing_ok=True)


def mark_started(root, job_id: int, attempt: int) -> Path:
    marker = started_path(root, job_id, attempt)
    create_private(marker).close()
    return marker


# -- fences the task finds, and whether an attempt still runs ---------------------------------
def superseded(root, job_id: int, attempt: int) -> str | None:
    """Why this attempt must stop now, or None: the server fenced it (a new leader's
    recovery, a preemption, a drain), or a later attempt of its job exists. One listing of
    the job's directory (and one read where a result file is there)."""
    try:
        names = os.listdir(job_dir(root, job_id))
    except FileNotFoundError:
        return "its job's directory is gone"
    except OSError:
        return None
    if f"attempt-{attempt}.json" in names and fenced(root, job_id, attempt):
        return "the scheduler fenced it (a new leader took over, or it was preempted or drained)"
    later = [int(m.group(1)) for n in names if (m := _ATTEMPT_FILE.match(n)) and int(m.group(1)) > attempt]
    if later:
        return f"attempt {max(later)} of its job exists"
    return None


def touch_alive(root, job_id: int, attempt: int) -> None:
    """The attempt's heartbeat (its mtime is the time of the last beat)."""
    path = alive_path(root, job_id, attempt)
    try:
        os.utime(path)
    except FileNotFoundError:
        create_private(path).close()


def mark_ended(root, job_id: int, attempt: int, *, how: str, started_at: float | None, why: str = "") -> None:
    """Record that the attempt's task stopped (`how`: finished, failed, stopped, fenced);
    written once, by the task, after everything it ran has ended."""
    path = ended_path(root, job_id, attempt)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with create_private(tmp) as f:
        json.dump({"how": how, "started_at": started_at, "ended_at": time.time(), "why": why}, f)
    os.replace(tmp, path)
    alive_path(root, job_id, attempt).unlink(missing_ok=True)


def read_ended(root, job_id: int, attempt: int) -> dict | None:
    """The attempt's end marker ({"how", "started_at", "ended_at", "why"}), or None."""
    return _read_object(ended_path(root, job_id, attempt))


def attempt_alive(root, job_id: int, attempt: int, *, now: float, stale_s: float = ALIVE_STALE_S) -> bool:
    """Whether the attempt's task may still be running (holding its slices): it has no end
    marker and its heartbeat is younger than `stale_s` at `now` (epoch s). Two stats."""
    if ended_path(root, job_id, attempt).exists():
        return False
    try:
        beat = os.stat(alive_path(root, job_id, attempt)).st_mtime
    except OSError:
        return False
    return now - beat < stale_s


def remove_markers(root, keep=frozenset()) -> int:
    """Remove every start marker (after recovery no attempt is followed) but those of the
    (job id, attempt) pairs in `keep` (fenced attempts that may still run)."""
    n = 0
    for marker in Path(root).glob("*/attempt-*.started"):
        if keep:
            m = _ATTEMPT_FILE.match(marker.name)
            if m is not None and marker.parent.name.isdigit() and (int(marker.parent.name), int(m.group(1))) in keep:
                continue
        marker.unlink(missing_ok=True)
        n += 1
    return n


# -- progress -----------------------------------------------------------------------------
def write_progress(root, job_id: int, progress: dict) -> None:
    path = job_dir(root, job_id) / PROGRESS_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with create_private(tmp) as f:
        json.dump(progress, f)
    os.replace(tmp, path)


def progress_mtime(root, job_id: int) -> float | None:
    try:
        return os.stat(job_dir(root, job_id) / PROGRESS_FILE).st_mtime
    except OSError:
        return None


def read_progress(root, job_id: int) -> dict | None:
    try:
        return json.loads((job_dir(root, job_id) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


# -- checkpoints on request -------------------------------------------------------------
def request_checkpoint(root, job_id: int) -> None:
    create_private(job_dir(root, job_id) / REQUEST_FILE).close()


def checkpoint_requested(root, job_id: int) -> bool:
    return (job_dir(root, job_id) / REQUEST_FILE).exists()


def acknowledge_checkpoint(root, job_id: int) -> None:
    (job_dir(root, job_id) / REQUEST_FILE).unlink(missing_ok=True)


def wait_checkpoints(root, job_ids, timeout: float, done=lambda job_id: False, poll_s: float = 0.05) -> set[int]:
    """Wait up to `timeout` until every job acked its checkpoint request (or `done(job)`
    says its task ended); returns the jobs that did not answer in time."""
    waiting = set(job_ids)
    deadline = time.monotonic() + timeout
    while waiting:
        waiting = {j for j in waiting if checkpoint_requested(root, j) and not done(j)}
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    for j in waiting:
        acknowledge_checkpoint(root, j)  # too late: it is cancelled anyway
    return waiting


# -- logs ---------------------------------------------------------------------------------
class LogFile:
    """The task's output: written to its attempt's log file (up to LOG_CAP_BYTES) and
    the last `keep` characters kept in memory for the result."""

    def __init__(self, path: Path, keep: int = 20000):
        self._file = create_private(path)
        self._written = 0
        self._tail = ""
        self._keep = keep

    def write(self, text: str) -> int:
        self._tail = (self._tail + text)[-self._keep:]
        if self._written < LOG_CAP_BYTES:
            data = text if self._written + len(text) <= LOG_CAP_BYTES else (
                text[:LOG_CAP_BYTES - self._written] + "\n[log truncated: over 1 MiB]\n")
            self._file.write(data)
            self._file.flush()
            self._written += len(data)
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def tail(self) -> str:
        return self._tail

    def close(self) -> None:
        self._file.close()


def clear(root, job_id: int) -> None:
    """The job ended: remove its checkpoint, progress, request, results, start markers,
    heartbeats and working directories; keep logs, fences and end markers."""
    d = job_dir(root, job_id)
    shutil.rmtree(d / "checkpoint", ignore_errors=True)
    for work in (*d.glob("work-*"), *d.glob("ckpt-*")):
        shutil.rmtree(work, ignore_errors=True)
    for pattern in (PROGRESS_FILE, REQUEST_FILE, "attempt-*.started", "attempt-*.alive", "*.tmp*", "workdir.tar.gz"):
        for p in d.glob(pattern):
            p.unlink(missing_ok=True)
    for p in d.glob("attempt-*.json"):
        n = _ATTEMPT_FILE.match(p.name)
        if n is None or not fenced(root, job_id, int(n.group(1))):
            p.unlink(missing_ok=True)
