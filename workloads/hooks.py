"""What a caller (the scheduler's task) hands `run_workload` to follow and checkpoint a run.

    hooks = RunHooks(on_step=report, checkpoint_dir="/state/ckpt/42", checkpoint_every_s=300,
                     checkpoint_requested=lambda: preempt_flag.is_set())
    run_workload(spec, memory_fraction, hooks=hooks)

Invariants:
- Pure data and a small progress tracker: importing this module imports no
  framework (nor scheduler, quota or ray).
- `on_step` is called after every step, warm-up included, with the step counted
  across attempts (a resumed run continues at the checkpoint's step). It must be
  cheap; the caller rate-limits what it forwards.
- `checkpoint_requested` is polled once per step and is edge-triggered: a save
  per False -> True change (or a first True), not one per step while it stays True.
- An exception raised by a hook propagates out of `run_workload` (that is how a
  caller aborts a run); a checkpoint already written stays valid. So does a save that
  `may_commit` refused (generations.NotCommitted): the run stops, nothing was saved.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable

# Progress rates cover at most this many recent steps.
RATE_WINDOW_STEPS = 20


@dataclass
class RunHooks:
    on_step: Callable[["Progress"], None] | None = None  # after every step (warm-up included)
    checkpoint_dir: str | None = None  # resume from here if it holds a checkpoint; save here
    checkpoint_every_steps: int | None = None  # save every N steps ...
    checkpoint_every_s: float | None = None  # ... or every T seconds, whichever first
    checkpoint_requested: Callable[[], bool] | None = None  # polled each step: True = save now
    on_checkpoint: Callable[[int], None] | None = None  # called with the step after each save
    attempt: int = 0  # tags the generations this run saves (workloads.generations)
    may_commit: Callable[[], bool] | None = None  # asked before each save becomes visible

    def __post_init__(self):
        n = self.checkpoint_every_steps
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n <= 0):
            raise ValueError(f"checkpoint_every_steps must be a positive integer, got {n!r}")
        t = self.checkpoint_every_s
        if t is not None and not (isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0):
            raise ValueError(f"checkpoint_every_s must be a positive number, got {t!r}")
        if self.checkpoint_dir is None and (n is not None or t is not None):
            raise ValueError("checkpoint_every_steps / checkpoint_every_s need a checkpoint_dir")


@dataclass(frozen=True)
class Progress:
    step: int  # steps done in total (across attempts), warm-up included
    steps: int  # warmup_steps + steps: the total the job asked for
    samples_per_second: float | None  # over the recent steps of this attempt
    eta_s: float | None
    loss: float | None

    def as_dict(self) -> dict:
        return {"step": self.step, "steps": self.steps, "samples_per_second": self.samples_per_second,
                "eta_s": self.eta_s, "loss": self.loss}


class RateWindow:
    """Seconds per step over the last RATE_WINDOW_STEPS steps of this attempt.

    `restart()` forgets what it saw (the runner calls it when the warm-up, with
    its tracing and compilation, ends), so the rate and the ETA follow the steady
    state. Time spent saving a checkpoint is left out: the runner calls
    `mark_start()` after each save."""

    def __init__(self, batch_size: int, clock=time.perf_counter):
        self.batch_size = batch_size
        self._clock = clock
        self._durations: collections.deque[float] = collections.deque(maxlen=RATE_WINDOW_STEPS)
        self._last = clock()

    def restart(self) -> None:
        self._durations.clear()

    def mark_start(self) -> None:
        """The next step starts now (time before it does not count)."""
        self._last = self._clock()

    def step_done(self) -> None:
        now = self._clock()
        self._durations.append(max(0.0, now - self._last))
        self._last = now

    def progress(self, step: int, total: int, loss: float | None) -> Progress:
        if not self._durations:
            return Progress(step, total, None, None, loss)
        per_step = sum(self._durations) / len(self._durations)
        rate = self.batch_size / per_step if per_step > 0 else None
        return Progress(step, total, rate, max(0, total - step) * per_step, loss)


def format_eta(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 100 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_progress(p: Progress) -> str:
    """`step 40/200  loss 2.301  812.4 samples/s  eta 12 s` (parts that are unknown are left out)."""
    parts = [f"step {p.step}/{p.steps}"]
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4g}")
    if p.samples_per_second is not None:
        parts.append(f"{p.samples_per_second:.1f} samples/s")
    if p.eta_s is not None:
        parts.append(f"eta {format_eta(p.eta_s)}")
    return "  ".join(parts)
