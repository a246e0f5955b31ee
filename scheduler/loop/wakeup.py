"""When the scheduling loop runs its next cycle: on a completion, a wake-up (a submission
or a cancel: the API's `on_change`), or after its period; and when it stops.

Invariants:
- A wake-up that arrives while a cycle runs is kept for the next one (`cycle_begins`
  clears it before the cycle, not after).
- After the first completion the loop waits up to `gather_s` more for the other running
  attempts, so one cycle settles (and refills) a batch of completions rather than one;
  after a wake-up, `wake_gather_s` more (`wake_gather_full_s` while the last cycle left
  no slice free: then a submission can only act through preemption, and a completion
  still ends the wait at once), so a burst of submissions is decided together.
- Only the real waits here read the monotonic clock; the loop's own timers are injected.
"""
from __future__ import annotations

import threading
import time


class Wakeup:
    """The loop's wake-up and stop signals, and its wait between cycles (see the module)."""

    def __init__(self, executor):
        self.executor = executor  # tracked() -> {job id: attempt}, wait(timeout, every=False) -> bool
        self.gather_s = 0.005  # after a completion, how long to wait for more before cycling
        self.wake_gather_s = 0.01  # after a submission or cancel, how long to wait for more
        self.wake_gather_full_s = 0.1  # the same when the last cycle left no slice free
        self.full = False  # the last cycle left no slice free
        self._wake = threading.Event()
        self._stop = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def cycle_begins(self) -> None:
        self._wake.clear()

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` or until stop()."""
        self._stop.wait(seconds)

    def idle(self, period_s: float) -> None:
        """Wait for a completion, a wake-up or the period, then gather (see the module)."""
        deadline = time.monotonic() + period_s
        while not self._stop.is_set() and not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not self.executor.tracked():
                self._wake.wait(min(0.05, left))
            elif self.executor.wait(min(0.05, left)):
                self.executor.wait(self.gather_s, every=True)
                return
        if self._wake.is_set() and not self._stop.is_set():
            gather = self.wake_gather_full_s if self.full else self.wake_gather_s
            if self.executor.tracked():
                self.executor.wait(gather)
            elif gather > 0:
                self._stop.wait(gather)
