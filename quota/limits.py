"""The ranges every number fairgpu accepts must lie in: one table, owned here.

The policy is total over these ranges (a hypothesis property in tests/quota checks
`decide` for trees, capacities and queues drawn from them), and the validation layer
(`scheduler.services.validate`) refuses anything outside them before it is written,
with one line naming the field and the range. The API, the CLI and the docs
(docs/admin.md, docs/institutions.md) quote these bounds; none restates a number.

Invariants:
- Every bound is finite, and every integer bound in `ALL` fits a 32-bit signed column (the
  narrowest integer PostgreSQL column fairgpu uses), so SQLite and PostgreSQL accept
  the same values. `HOST_MEMORY_PER_SLICE` (bytes) is larger: it is kept only as the
  text of a setting row, never in an integer column, so it is not in `ALL`.
- WEIGHT.high / WEIGHT.low bounds the ratio between any two weights (1e6).
- `Range.check` accepts a value as given or raises `LimitError` (a `QuotaError`); it
  refuses NaN, infinities, bools and non-numbers, and floats for an integer field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from quota.errors import QuotaError

INT32_MAX = 2**31 - 1


class LimitError(QuotaError):
    """A value outside its field's range (or of the wrong kind). One line: field, range, value."""


@dataclass(frozen=True)
class Range:
    """A closed range [low, high] of a named field, with its unit for messages.

    A range whose bounds are both `int` is an integer field: `check` wants an `int`.
    """

    field: str
    low: float
    high: float
    unit: str = ""

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        kind = "an integer " if self.integer else ""
        return f"{kind}{_fmt(self.low)} to {_fmt(self.high)}{unit}"

    def check(self, value: object, field: str | None = None) -> float:
        """`value` itself if it lies in the range; else LimitError.

        Refuses bools, strings, NaN and infinities, and any float for an integer field.
        `field` names the value in the message when it is not the range's own name.
        """
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value))
        if ok and self.integer:
            ok = isinstance(value, int)
        if not ok or value not in self:  # type: ignore[operator]
            raise LimitError(f"{field or self.field} must be {self.describe()} (got {_show(value)})")
        return value  # type: ignore[return-value]


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _show(value: object) -> str:
    """The refused value, short and on one line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"{'-' if value < 0 else ''}an integer of {value.bit_length()} bits"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


DAY_S = 86_400.0

WEIGHT = Range("weight", 0.001, 1000.0)
GUARANTEED = Range("guaranteed", 0, 1_000_000, "slices")
MAX_SLICES = Range("max", 0, 1_000_000, "slices")
MAX_PENDING = Range("max_pending", 0, 1_000_000, "jobs")
GPUS_PER_NODE = Range("gpus", 0, 64, "GPUs")  # 0 empties a declared node
SLICES_PER_GPU = Range("slices_per_gpu", 1, 64, "slices")
NODES = Range("nodes", 0, 10_000, "nodes")
JOB_SLICES = Range("slices", 1, 64 * 64, "slices")  # at most one whole node
JOB_COUNT = Range("count", 1, 1000, "jobs")  # one array submission (Slurm's MaxArraySize is 1001)
HOLD_SECONDS = Range("seconds", 0, 30 * DAY_S, "s")
STEPS = Range("steps", 1, 1_000_000, "steps")
WARMUP_STEPS = Range("warmup_steps", 0, 10_000, "steps")
BATCH_SIZE = Range("batch_size", 1, 4096, "samples")
IMAGE_SIZE = Range("image_size", 16, 1024, "px")
TIME_LIMIT = Range("time", 1, 30 * DAY_S, "s")
TOKEN_LIFETIME = Range("expires", 60, 3650 * DAY_S, "s")
HALF_LIFE = Range("half_life", 60, 3650 * DAY_S, "s")
ID = Range("id", 1, INT32_MAX)
LOG_TAIL = Range("tail", 0, 100_000, "lines")  # `fairgpu logs --tail`, GET .../logs?tail=
LOG_OFFSET = Range("offset", 0, INT32_MAX, "bytes")  # a logs cursor's byte offset in an attempt's output
MAX_PROCESSES = Range("max_processes", 16, 1_000_000, "processes")  # a script attempt's pids (threads count)
HOST_MEMORY_PER_SLICE = Range("host_memory_per_slice", 64 << 20, 64 << 40, "bytes")  # 64 MiB to 64 TiB; not in ALL

ALL = (WEIGHT, GUARANTEED, MAX_SLICES, MAX_PENDING, GPUS_PER_NODE, SLICES_PER_GPU, NODES, JOB_SLICES,
       JOB_COUNT, HOLD_SECONDS, STEPS, WARMUP_STEPS, BATCH_SIZE, IMAGE_SIZE, TIME_LIMIT, TOKEN_LIFETIME,
       HALF_LIFE, ID, LOG_TAIL, LOG_OFFSET, MAX_PROCESSES)

# Names: one pattern per '/'-separated segment (see scheduler.services.validate).
NAME_SEGMENT_MAX_LEN = 64
NAME_SEGMENT_PATTERN = rf"[a-z0-9](?:[a-z0-9_.-]{{0,{NAME_SEGMENT_MAX_LEN - 2}}}[a-z0-9])?"
NAME_SEGMENT_RULE = (f"1 to {NAME_SEGMENT_MAX_LEN} lowercase letters, digits, '.', '_' or '-', "
                     "starting and ending with a letter or digit")
NAME_MAX_LEN = 255
