"""A job's checkpoint as a store of complete generations.

    <root>/gen-<attempt:06d>-<seq:06d>/    a complete generation (renamed into place)
    <root>/.staging-<attempt>-<pid>-<n>/   one being written; never read
    <root>/.pruned-<name>-<pid>/           one being removed; never read

Invariants:
- A generation is visible only once complete: it is written under a staging name, its
  files and folder fsynced, then renamed to its `gen-` name (one atomic rename on one
  filesystem). A crash, a kill or a failed save at any point leaves at most a staging
  folder, which nothing reads; the generations before it stay whole.
- Generations are ordered by (attempt, seq): an attempt's generations sort after every
  earlier attempt's, so a late commit by an attempt that was superseded (fenced) never
  shadows its successor's. Two writers never share a name: a rename onto a taken name
  fails and the writer takes the next seq.
- `latest(root)` is the newest complete generation, the one a new attempt resumes from.
- A commit may be guarded: `may_commit()` is asked after the data is on disk and just
  before the rename; False removes the staging folder, leaves nothing visible and raises
  `NotCommitted` (a fenced attempt writes no checkpoint over its successor's).
- After each commit the writer prunes: all but the newest `keep` (2) generations are
  renamed out of the `gen-` namespace, then removed, so a half-removed generation is
  never read either.
- Standard library only: the task, the built-in models and the server all use it.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

KEEP = 2
PREFIX = "gen-"
_NAME = re.compile(r"^gen-(\d{6,})-(\d{6,})$")
_serial = itertools.count(1)


class NotCommitted(RuntimeError):
    """The guard refused the commit (the attempt was fenced): nothing became visible."""


def name(attempt: int, seq: int) -> str:
    return f"{PREFIX}{attempt:06d}-{seq:06d}"


def parse(folder_name: str) -> tuple[int, int] | None:
    """(attempt, seq) of a generation's folder name, or None for anything else."""
    m = _NAME.match(folder_name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def generations(root: str | os.PathLike) -> list[Path]:
    """The complete generations in `root`, oldest first (none: [])."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    found = [(key, Path(e.path)) for e in entries if (key := parse(e.name)) is not None and e.is_dir()]
    return [p for _key, p in sorted(found)]


def latest(root: str | os.PathLike) -> Path | None:
    """The newest complete generation, or None."""
    found = generations(root)
    return found[-1] if found else None


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for here, dirs, files in os.walk(folder):
        for f in files:
            _fsync(Path(here) / f)
        for d in dirs:
            _fsync(Path(here) / d, directory=True)
    _fsync(folder, directory=True)


def staging(root: str | os.PathLike, attempt: int) -> Path:
    """A fresh, empty staging folder in `root` (0700) for `attempt` to write into."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    while True:
        path = root / f".staging-{attempt}-{os.getpid()}-{next(_serial)}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue


def commit(root: str | os.PathLike, folder: Path, *, attempt: int, may_commit: Callable[[], bool] | None = None,
           keep: int = KEEP) -> Path:
    """Make `folder` (a staging folder in `root`, fully written) the newest generation of
    `attempt`; prune to `keep`. Raises NotCommitted if `may_commit()` says no."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _fsync_tree(folder)
    seq = 1 + max((k[1] for p in generations(root) if (k := parse(p.name)) and k[0] == attempt), default=0)
    while True:
        if may_commit is not None and not may_commit():
            shutil.rmtree(folder, ignore_errors=True)
            raise NotCommitted(f"attempt {attempt} may no longer commit a checkpoint in {root}")
        target = root / name(attempt, seq)
        try:
            os.rename(folder, target)  # fails on a taken name (a non-empty folder): take the next
        except OSError:
            if not target.exists():
                raise
            seq += 1
            continue
        _fsync(root, directory=True)
        prune(root, keep)
        return target


@contextmanager
def writing(root: str | os.PathLike, *, attempt: int, may_commit: Callable[[], bool] | None = None,
            keep: int = KEEP) -> Iterator[Path]:
    """`with writing(root, attempt=n) as d: ...write files into d...`: a new generation
    once the block ends normally; nothing visible if it raises (or the guard refuses)."""
    folder = staging(root, attempt)
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    commit(root, folder, attempt=attempt, may_commit=may_commit, keep=keep)


def adopt_copy(root: str | os.PathLike, source: Path, *, attempt: int, may_commit: Callable[[], bool] | None = None,
               keep: int = KEEP, skip: tuple[str, ...] = ()) -> Path:
    """A copy of the folder `source` (files and folders; links are left out) as the newest
    generation of `attempt`. `source` must not change while it is copied."""
    folder = staging(root, attempt)
    try:
        copy_contents(source, folder, skip=skip)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return commit(root, folder, attempt=attempt, may_commit=may_commit, keep=keep)


def copy_contents(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy what `source` holds into the existing folder `target` (regular files and
    folders only, created 0600/0700)."""
    for entry in os.scandir(source):
        if entry.name in skip or entry.is_symlink():
            continue
        dest = target / entry.name
        if entry.is_dir():
            dest.mkdir(mode=0o700, exist_ok=True)
            copy_contents(Path(entry.path), dest)
        elif entry.is_file():
            with open(entry.path, "rb") as src, os.fdopen(
                    os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def prune(root: str | os.PathLike, keep: int = KEEP) -> list[str]:
    """Remove all but the newest `keep` generations; returns the names removed."""
    root = Path(root)
    gone = []
    for old in generations(root)[:-keep] if keep > 0 else generations(root):
        aside = root / f".pruned-{old.name}-{os.getpid()}-{next(_serial)}"
        try:
            os.rename(old, aside)  # out of the gen- namespace first: never read half-removed
        except OSError:
            continue  # another writer pruned it
        shutil.rmtree(aside, ignore_errors=True)
        gone.append(old.name)
    return gone
