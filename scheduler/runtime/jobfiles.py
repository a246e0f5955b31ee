"""A job's files in the shared state directory: one directory per job.

    <root>/<job id>/attempt-<n>.json      the attempt's result, or its fence
    <root>/<job id>/attempt-<n>.started   created as the attempt's task starts
    <root>/<job id>/attempt-<n>.log       the task's own output (capped at LOG_CAP_BYTES)
    <root>/<job id>/progress.json         step, steps, samples/s, ETA (rewritten, <= 1/s)
    <root>/<job id>/checkpoint/           the job's checkpoint, kept across attempts
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
- The task removes `checkpoint.request` once its checkpoint is saved: that is the ack.
- Every file and directory is created owner-only (0600 / 0700).
- When a job ends, `clear` removes its checkpoint, progress, results and markers; its
  logs stay, for `fairgpu logs`.
- No Ray, no database: the task and the server both use this module.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

LOG_CAP_BYTES = 1 << 20
PROGRESS_FILE = "progress.json"
REQUEST_FILE = "checkpoint.request"


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


def checkpoint_dir(root: str | os.PathLike, job_id: int) -> Path:
    return job_dir(root, job_id) / "checkpoint"


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
def _read(root, job_id: int, attempt: int) -> dict | None:
    try:
        data = json.loads(result_path(root, job_id, attempt).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def remove_markers(root) -> int:
    """Remove every start marker (after recovery no attempt is followed)."""
    n = 0
    for marker in Path(root).glob("*/attempt-*.started"):
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
    """The job ended: remove its checkpoint, progress, request, results, markers and working
    directory; keep logs."""
    d = job_dir(root, job_id)
    shutil.rmtree(d / "checkpoint", ignore_errors=True)
    for work in d.glob("work-*"):
        shutil.rmtree(work, ignore_errors=True)
    for pattern in (PROGRESS_FILE, REQUEST_FILE, "attempt-*.json", "attempt-*.started", "*.tmp*", "workdir.tar.gz"):
        for p in d.glob(pattern):
            p.unlink(missing_ok=True)
