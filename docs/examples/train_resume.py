"""A small PyTorch training script that keeps fairgpu's checkpoint contract.

Run it on your slices with:

    fairgpu submit script --slices 1 --framework pytorch --working-dir docs/examples -- python train_resume.py

The contract: fairgpu sets FAIRGPU_CHECKPOINT_DIR, this attempt's checkpoint folder,
which starts with the job's newest complete checkpoint. When the job is preempted (or the
server shuts down), the script gets SIGTERM and a grace period; it saves there and exits
with status 0, which makes the folder the job's checkpoint. Its next attempt finds the
files and goes on from where it stopped. It also saves every SAVE_EVERY steps and commits
them (`fairgpu_checkpoint.commit()`), in case its node is lost without warning.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

STEPS = int(os.environ.get("TRAIN_STEPS", "200"))
SAVE_EVERY = 20
CHECKPOINT = Path(os.environ.get("FAIRGPU_CHECKPOINT_DIR", ".")) / "train_resume.pt"

stop = False


def on_sigterm(_signum, _frame):
    global stop
    stop = True  # finish the current step, save, exit


signal.signal(signal.SIGTERM, on_sigterm)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)  # a target the model can learn
step = 0


def save() -> None:
    tmp = CHECKPOINT.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, CHECKPOINT)


def commit() -> None:
    """The saved files become the job's checkpoint (a no-op outside fairgpu)."""
    try:
        import fairgpu_checkpoint
    except ImportError:
        return
    fairgpu_checkpoint.commit()


if CHECKPOINT.exists():
    state = torch.load(CHECKPOINT, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    step = state["step"]
    print(f"resumed at step {step}", flush=True)

while step < STEPS:
    loss = torch.nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    step += 1
    if step == 1 or step % SAVE_EVERY == 0:
        print(f"step {step} loss {loss.item():.4f}", flush=True)
    if step % SAVE_EVERY == 0:
        save()
        commit()
    if stop:
        save()
        print(f"stopped at step {step}: saved", flush=True)
        sys.exit(0)
    if os.environ.get("TRAIN_STEP_DELAY"):
        import time

        time.sleep(float(os.environ["TRAIN_STEP_DELAY"]))
print(f"done: {STEPS} steps, final loss {loss.item():.4f}", flush=True)
