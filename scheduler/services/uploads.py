"""Working directories uploaded for script jobs, before a job claims them.

Invariants:
- An upload is checked as it arrives (scheduler.scripts.check_archive: a bounded, safe
  tar.gz; anything else is a one-line 422) and stored under the uploading account, by its
  SHA-256: `<results>/uploads/<account id>/<sha256>.tar.gz`, 0600. An account can only
  submit its own uploads; another account's is "unknown", as a missing one.
- A submission claims its upload: the file moves into the job's directory, so an upload
  serves one job. At most MAX_WAITING uploads wait per account, and uploads older than
  MAX_AGE_S are removed when the account uploads again: nothing grows without bound.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from scheduler import jobfiles, scripts
from scheduler.services.errors import DomainError, Invalid, NotFound

MAX_WAITING = 20
MAX_AGE_S = 86_400.0
SHA256 = re.compile(r"[0-9a-f]{64}")


def store(root: str, account_id: int, data: bytes, now: float | None = None) -> dict:
    """Check and keep an uploaded working directory; returns its id (sha256) and size."""
    try:
        info = scripts.check_archive(data)
    except scripts.ArchiveError as exc:
        raise Invalid(str(exc)) from None
    folder = jobfiles.ensure_dir(jobfiles.upload_path(root, account_id, info.sha256).parent)
    _prune(folder, (now if now is not None else time.time()) - MAX_AGE_S)
    path = folder / f"{info.sha256}.tar.gz"
    if not path.exists():
        if sum(1 for _ in folder.glob("*.tar.gz")) >= MAX_WAITING:
            raise DomainError(f"{MAX_WAITING} uploads are waiting for a job already; submit or wait a day")
        tmp = folder / f".{info.sha256}.tmp{os.getpid()}"
        with jobfiles.create_private(tmp, binary=True) as f:
            f.write(data)
        os.replace(tmp, path)
    return {"upload": info.sha256, "bytes": info.packed_bytes, "unpacked_bytes": info.unpacked_bytes,
            "files": info.entries}


def check(root: str | None, account_id: int, upload: str) -> Path:
    """The upload a submission names, which must be this account's (NotFound otherwise)."""
    if root is None:
        raise DomainError("this server takes no script jobs: it has no state directory")
    path = jobfiles.upload_path(root, account_id, upload)
    if not SHA256.fullmatch(upload) or not path.exists():
        raise NotFound(f"unknown upload {upload[:16]}; upload the working directory first (fairgpu submit "
                       "script --working-dir does both)")
    return path


def claim(root: str, account_id: int, upload: str, job_id: int) -> None:
    """Move the upload into the job's directory (after the job row exists)."""
    target = jobfiles.workdir_archive(root, job_id)
    jobfiles.ensure_dir(target.parent)
    os.replace(check(root, account_id, upload), target)


def _prune(folder: Path, before: float) -> None:
    for old in folder.glob("*.tar.gz"):
        try:
            if old.stat().st_mtime < before:
                old.unlink()
        except OSError:
            continue
