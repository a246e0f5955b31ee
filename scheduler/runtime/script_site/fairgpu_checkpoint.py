"""fairgpu's checkpoint contract, for a user's script (docs/institutions.md).

fairgpu puts this folder first on a script's PYTHONPATH, so a script may
`import fairgpu_checkpoint`:

    import fairgpu_checkpoint as ckpt

    folder = ckpt.folder()             # FAIRGPU_CHECKPOINT_DIR (a Path), or None outside fairgpu
    if (folder / "state.pt").exists():  # at start it holds the job's newest complete checkpoint
        state = torch.load(folder / "state.pt")
    ...
    torch.save(state, folder / "state.pt")
    ckpt.commit()                      # the folder, as it is now, becomes the job's checkpoint

`commit()` creates the request file `.fairgpu-commit` in the folder and waits until
fairgpu has copied the folder into a new complete generation and removed it (a shell
script can do the same: `touch "$FAIRGPU_CHECKPOINT_DIR/.fairgpu-commit"` and wait until
it is gone). Do not change the folder while `commit()` runs. Exiting with status 0
after SIGTERM commits the folder too. Only the standard library.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

REQUEST = ".fairgpu-commit"  # scheduler.runtime.scripts.COMMIT_REQUEST


def folder() -> Path | None:
    """This attempt's checkpoint folder (FAIRGPU_CHECKPOINT_DIR), or None outside fairgpu."""
    value = os.environ.get("FAIRGPU_CHECKPOINT_DIR")
    return Path(value) if value else None


def commit(poll_s: float = 0.05) -> bool:
    """Make the folder's current contents the job's newest checkpoint; True once fairgpu
    has, False outside fairgpu. It waits: an attempt that was fenced gets no answer, and
    SIGTERM instead."""
    here = folder()
    if here is None:
        return False
    request = here / REQUEST
    request.touch()
    while request.exists():
        time.sleep(poll_s)
    return True
