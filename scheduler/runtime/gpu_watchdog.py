"""The GPU memory watchdog: an attempt that holds more than its slices' share ends.

The framework cap a script gets (scheduler/runtime/script_site/fairgpu_cap.py) is cooperative:
the script can lift it. This is the part it cannot lift. The task that runs the attempt
reads, through NVML, the GPU memory of the attempt's processes, and ends the attempt
when they hold too much for too long.

Invariants:
- The limit is the share plus a margin. The share is the job's memory fraction
  (min(1, num_gpus)) times the total memory of the GPUs the attempt was given. The
  margin is max(5 % of the share, 512 MiB). NVML counts memory that no framework cap
  covers: each process that opens CUDA holds a context of roughly 300 to 500 MiB, plus
  library workspaces. The floor lets one process use its whole cap. The 5 % lets a large
  share absorb allocator rounding. A job given whole GPUs gets a limit above what they
  hold, so it is never stopped.
- A reading is the memory NVML lists for the attempt's processes now, summed over the
  GPUs it was given. A reading of None (nothing listed, or NVML unreadable) counts as
  under the limit. Nothing that cannot be measured ends a job.
- The watchdog reports a violation once readings have stayed over the limit for longer
  than the grace (GRACE_S = 5 s on the clock it is given). Any reading at or under the
  limit starts the count again, so a short spike costs nothing. Once reported, the
  violation stays. It names the highest reading while over, the limit and how long the
  readings were over.
- Only the standard library is used here. The readings come from one NVML session that
  also measures the attempt: workloads.measure.NvmlProcessPeak(on_sample=watchdog.observe).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

GRACE_S = 5.0
MARGIN_FRACTION = 0.05
MARGIN_FLOOR_BYTES = 512 << 20


def margin_for(share_bytes: int) -> int:
    """The margin over a share, in bytes: max(5 % of it, 512 MiB)."""
    return max(int(share_bytes * MARGIN_FRACTION), MARGIN_FLOOR_BYTES)


def size(n: int) -> str:
    """Bytes as GiB with two decimals, or as whole MiB below 1 GiB."""
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


@dataclass(frozen=True)
class GpuLimit:
    """What an attempt may hold on its GPUs: `share_bytes` + `margin_bytes`, for no longer
    than `grace_s` at a time."""

    share_bytes: int
    margin_bytes: int
    grace_s: float = GRACE_S

    @property
    def allowed_bytes(self) -> int:
        return self.share_bytes + self.margin_bytes

    @classmethod
    def for_share(cls, fraction: float, totals: list[int], grace_s: float = GRACE_S) -> "GpuLimit | None":
        """The limit of a job with memory fraction `fraction` on GPUs of `totals` bytes each.
        Returns None where there is nothing to enforce: no GPU known (NVML unavailable) or
        no GPU share."""
        if not totals or fraction <= 0:
            return None
        share = int(min(1.0, fraction) * sum(totals))
        return cls(share, margin_for(share), grace_s)

    def describe(self) -> str:
        return f"{size(self.allowed_bytes)} (its share, {size(self.share_bytes)}, plus a margin of " \
               f"{size(self.margin_bytes)})"


@dataclass(frozen=True)
class Violation:
    """An attempt that stayed over its limit for longer than the grace."""

    peak_bytes: int  # the highest reading while over
    allowed_bytes: int
    share_bytes: int
    margin_bytes: int
    seconds_over: float

    def reason(self) -> str:
        limit = GpuLimit(self.share_bytes, self.margin_bytes)
        return (f"GPU memory over the job's share: its processes held {size(self.peak_bytes)} "
                f"({self.peak_bytes} bytes, measured by NVML) for {self.seconds_over:.1f} s; the limit is "
                f"{limit.describe()}")


class GpuWatchdog:
    """Fed one reading at a time (`observe`, from the sampler's thread); `violation` is
    None until the attempt has been over its limit for longer than the grace."""

    def __init__(self, limit: GpuLimit, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._over_since: float | None = None
        self._peak = 0
        self._violation: Violation | None = None

    @property
    def violation(self) -> Violation | None:
        return self._violation

    def observe(self, used: int | None) -> Violation | None:
        """Record a reading (bytes the attempt's processes hold now, or None); returns the
        violation once there is one."""
        now = self._clock()
        with self._lock:
            if self._violation is not None:
                return self._violation
            if used is None or used <= self.limit.allowed_bytes:
                self._over_since, self._peak = None, 0
                return None
            if self._over_since is None:
                self._over_since = now
            self._peak = max(self._peak, used)
            over = now - self._over_since
            if over > self.limit.grace_s:
                self._violation = Violation(self._peak, self.limit.allowed_bytes, self.limit.share_bytes,
                                            self.limit.margin_bytes, over)
            return self._violation
