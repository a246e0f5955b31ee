"""Working directories uploaded for script jobs, before a job claims them.

Invariants:
- Who may upload is settled first, in one short transaction that closes before a byte of
  the body is read (``may_upload``): the caller's leaf account (or the one an admin
  names), which must be allowed scripts (403 otherwise), on a server with a state
  directory (409 otherwise).
- The body is checked as it arrives (``Receiver``: scheduler.runtime.archive's streaming reader;
  anything unsafe, malformed or over a limit is a one-line 422) and written to a private
  temporary file as it goes; no database session is open meanwhile. Accepted, it is kept
  under the uploading account by its SHA-256: `<results>/uploads/<account id>/<sha256>.tar.gz`,
  0600; refused, nothing of it is left. An account can only submit its own uploads;
  another account's is "unknown", as a missing one.
- A submission claims its upload: the file moves into the job's directory, so an upload
  serves one job. At most MAX_WAITING uploads wait per account, and uploads older than
  MAX_AGE_S are removed when the account uploads again: nothing grows without bound.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from scheduler.runtime import archive, jobfiles
from scheduler.services import inherited
from scheduler.services.directory import directory
from scheduler.services.errors import DomainError, Forbidden, Invalid, NotFound

MAX_WAITING = 20
MAX_AGE_S = 86_400.0
SHA256 = re.compile(r"[0-9a-f]{64}")


def may_upload(session, root: str | None, account: str | None, accounts) -> int:
    """The id of the account an upload is stored under, once this caller may upload there."""
    from scheduler.services.jobs import uploading_account  # jobs imports this module

    entry = uploading_account(session, account, accounts)
    if not inherited.resolve(directory(session).ancestors(entry)).allow_scripts:
        raise Forbidden(f"account {entry.name} may not run scripts, so it may not upload (an admin allows them: "
                        f"fairgpu admin account set {entry.name} --allow-scripts)")
    if root is None:
        raise DomainError("this server takes no script jobs: it has no state directory")
    return entry.id


class Receiver:
    """One upload, checked and written as its pieces arrive: ``feed`` each piece, then
    ``finish`` (the answer) or ``discard``. Blocking file work: call it from a worker thread."""

    def __init__(self, root: str, account_id: int, now: float | None = None) -> None:
        self.folder = jobfiles.ensure_dir(jobfiles.upload_path(root, account_id, "-").parent)
        _prune(self.folder, (now if now is not None else time.time()) - MAX_AGE_S)
        self.tmp = self.folder / f".upload-{os.getpid()}-{os.urandom(8).hex()}.tmp"
        self._file = jobfiles.create_private(self.tmp, exclusive=True, binary=True)
        self._reader = archive.Reader()

    def feed(self, piece: bytes) -> None:
        try:
            self._reader.feed(piece)
        except archive.ArchiveError as exc:
            raise Invalid(str(exc)) from None
        self._file.write(piece)

    def finish(self) -> dict:
        try:
            info = self._reader.finish()
        except archive.ArchiveError as exc:
            raise Invalid(str(exc)) from None
        self._file.close()
        path = self.folder / f"{info.sha256}.tar.gz"
        if not path.exists():
            if sum(1 for _ in self.folder.glob("*.tar.gz")) >= MAX_WAITING:
                raise DomainError(f"{MAX_WAITING} uploads are waiting for a job already; submit or wait a day")
            os.replace(self.tmp, path)
        return {"upload": info.sha256, "bytes": info.packed_bytes, "unpacked_bytes": info.unpacked_bytes,
                "files": info.entries}

    def discard(self) -> None:
        """Remove what is left of this upload (after ``finish`` moved it: nothing)."""
        self._file.close()
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


def store(root: str, account_id: int, data: bytes, now: float | None = None) -> dict:
    """Check and keep a whole uploaded working directory at once (``Receiver`` fed one piece)."""
    receiver = Receiver(root, account_id, now)
    try:
        receiver.feed(data)
        return receiver.finish()
    finally:
        receiver.discard()


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
    """Uploads older than `before`, and what an upload cut short (a server stopped mid-body) left."""
    for old in (*folder.glob("*.tar.gz"), *folder.glob(".upload-*.tmp")):
        try:
            if old.stat().st_mtime < before:
                old.unlink()
        except OSError:
            continue
