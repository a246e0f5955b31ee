"""Checkpoints of a training run, so that a preempted job resumes where it was.

A checkpoint directory is a store of generations (workloads.generations): each save
writes a new generation folder aside and renames it into place; a load reads the newest.
A generation holds:

    checkpoint.json        the commit record: the step, what run it belongs to
                           (model, framework, mode, batch, image size, data, seed),
                           the python and numpy RNG states, the losses so far and
                           the name of the state file
    state-<step>.pt|.npz   the framework's state, written by the Session: model
                           weights (buffers and BatchNorm statistics included),
                           every optimizer's state and the framework's RNG state

Invariants:
- A save writes the state file, then `checkpoint.json` that names it, into a staging
  folder; both are fsynced and the folder is renamed to the next generation. A crash at
  any point leaves the previous generations whole; a half-written one is never visible,
  even to another attempt saving into the same store at the same time.
- A save may be guarded (`may_commit`, asked just before the rename): a fenced attempt's
  save raises `generations.NotCommitted` and leaves nothing. Saves are tagged with the
  attempt, so an earlier attempt's late save never shadows a later one's.
- A checkpoint belongs to one run: resuming with another model, framework,
  mode, batch size, image size, data or seed is refused (ValueError), because
  the state or the batch sequence would not fit. `steps` and `warmup_steps` may
  change between attempts.
- Infer mode learns nothing: its checkpoint is the record alone (step and RNG).
- Importing this module imports no framework and no numpy; `read_meta` and
  `remove` are safe to call from the server.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

from workloads import generations

FORMAT = 1
META = "checkpoint.json"
STATE_PREFIX = "state-"
# What must match between the attempt that saved and the one that resumes.
IDENTITY = ("model", "framework", "mode", "batch_size", "image_size", "data", "seed")


class CheckpointError(RuntimeError):
    """A checkpoint directory holds a record that cannot be read or loaded."""


class StateLoadError(CheckpointError):
    """The state file could not be loaded; the session may be partly overwritten."""


def identity(spec) -> dict:
    return {"model": spec.model, "framework": spec.framework, "mode": spec.mode,
            "batch_size": spec.resolved_batch_size, "image_size": spec.resolved_image_size,
            "data": spec.data_dir or "synthetic", "seed": spec.seed}


def resolve(checkpoint_dir: str | os.PathLike) -> Path:
    """The folder a load reads: the store's newest generation, or `checkpoint_dir` itself
    where it holds no generation (a generation folder given directly)."""
    return generations.latest(checkpoint_dir) or Path(checkpoint_dir)


def read_meta(checkpoint_dir: str | os.PathLike) -> dict | None:
    """The newest checkpoint record in `checkpoint_dir`, or None where there is none.

    Raises CheckpointError when a record exists but cannot be read."""
    path = resolve(checkpoint_dir) / META
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    try:
        meta = json.loads(text)
        int(meta["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a checkpoint record ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {meta.get('format')!r}, this fairgpu reads {FORMAT}")
    return meta


def latest_step(checkpoint_dir: str | os.PathLike) -> int | None:
    """The step of the checkpoint in `checkpoint_dir` (None if none or unreadable)."""
    try:
        meta = read_meta(checkpoint_dir)
    except CheckpointError:
        return None
    return None if meta is None else int(meta["step"])


def remove(checkpoint_dir: str | os.PathLike) -> None:
    """Delete a checkpoint directory and everything in it (missing is fine)."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


def check_identity(meta: dict, spec, checkpoint_dir) -> None:
    mine = identity(spec)
    theirs = meta.get("run", {})
    diff = [f"{k} {theirs.get(k)!r} (this run: {mine[k]!r})" for k in IDENTITY if theirs.get(k) != mine[k]]
    if diff:
        raise ValueError(f"checkpoint in {checkpoint_dir} belongs to another run: {', '.join(diff)}")


# ---------------------------------------------------------------- RNG (python, numpy)
def capture_rng() -> dict:
    import numpy as np

    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(state), gauss],
            "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}


def restore_rng(saved: dict) -> None:
    import numpy as np

    version, state, gauss = saved["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------- save / load
def _write_atomically(path: Path, write) -> None:
    """`write(fileobj)` into a temp file beside `path`, fsync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(checkpoint_dir: str | os.PathLike, spec, session, step: int, total: int,
         losses: list[float], loss_last: float | None, *, attempt: int = 0,
         may_commit=None) -> Path:
    """Write the checkpoint of `session` after `step` steps as a new generation of the
    store `checkpoint_dir`; return its record's path. `attempt` tags the generation;
    `may_commit` guards it (generations.NotCommitted when it says no)."""
    root = Path(checkpoint_dir)
    folder = generations.staging(root, attempt)
    try:
        state_name = None
        if session.has_state:
            state_name = f"{STATE_PREFIX}{step:09d}{session.state_suffix}"
            _write_atomically(folder / state_name, session.save_state)
        meta = {"format": FORMAT, "step": step, "steps_total": total, "saved_at": time.time(),
                "run": identity(spec), "state": state_name, "rng": capture_rng(),
                "losses": list(losses), "loss_last": loss_last}
        _write_atomically(folder / META, lambda fh: fh.write(json.dumps(meta).encode()))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return generations.commit(root, folder, attempt=attempt, may_commit=may_commit) / META


def load(checkpoint_dir: str | os.PathLike, spec, session) -> dict | None:
    """Load the newest checkpoint in `checkpoint_dir` into `session`; return its record (None: none there).

    Raises ValueError when it belongs to another run, CheckpointError when it
    cannot be read (StateLoadError once the session may have been touched).
    The python and numpy RNG are not restored here (`restore_rng`)."""
    folder = resolve(checkpoint_dir)
    meta = read_meta(folder)
    if meta is None:
        return None
    check_identity(meta, spec, checkpoint_dir)
    if session.has_state:
        name = meta.get("state")
        if not name:
            raise CheckpointError(f"checkpoint in {folder} names no state file")
        path = folder / name
        try:
            session.load_state(path)
        except Exception as e:  # a torn copy, another framework version, a shape that changed
            raise StateLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from e
    return meta
