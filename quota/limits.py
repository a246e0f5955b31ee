"""The ranges every number fairgpu accepts must lie in: one table, owned here.

The policy is total over these ranges (a hypothesis property in tests/quota checks
`decide` for trees, capacities and queues drawn from them), and the validation layer
(`scheduler.services.validate`) refuses anything outside them before it is written,
with one line naming the field and the range. The API, the CLI and the docs
(docs/admin.md, docs/institutions.md) quote these bounds; none restates a number.

Invariants:
- Every bound is finite, and every integer bound fits a 32-bit signed column (the
  narrowest integer PostgreSQL column fairgpu uses), so SQLite and PostgreSQL accept
  the same values.
- WEIGHT_MAX / WEIGHT_MIN bounds the ratio between any two weights (1e6).
"""
from __future__ import annotations

from dataclasses import dataclass

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Range:
    """A closed range [low, high] of a named field, with its unit for messages."""

    field: str
    low: float
    high: float
    unit: str = ""

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{_fmt(self.low)} to {_fmt(self.high)}{unit}"


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


DAY_S = 86_400.0

WEIGHT = Range("weight", 0.001, 1000.0)
GUARANTEED = Range("guaranteed", 0, 1_000_000, "slices")
MAX_SLICES = Range("max", 0, 1_000_000, "slices")
MAX_PENDING = Range("max_pending", 0, 1_000_000, "jobs")
GPUS_PER_NODE = Range("gpus", 1, 64, "GPUs")
SLICES_PER_GPU = Range("slices_per_gpu", 1, 64, "slices")
NODES = Range("nodes", 0, 10_000, "nodes")
JOB_SLICES = Range("slices", 1, 64 * 64, "slices")  # at most one whole node
JOB_COUNT = Range("count", 1, 10_000, "jobs")
HOLD_SECONDS = Range("seconds", 0, 30 * DAY_S, "s")
STEPS = Range("steps", 1, 1_000_000, "steps")
WARMUP_STEPS = Range("warmup_steps", 0, 10_000, "steps")
BATCH_SIZE = Range("batch_size", 1, 4096, "samples")
IMAGE_SIZE = Range("image_size", 16, 1024, "px")
TIME_LIMIT = Range("time", 1, 30 * DAY_S, "s")
TOKEN_LIFETIME = Range("expires", 60, 3650 * DAY_S, "s")
HALF_LIFE = Range("half_life", 60, 3650 * DAY_S, "s")
ID = Range("id", 1, INT32_MAX)

ALL = (WEIGHT, GUARANTEED, MAX_SLICES, MAX_PENDING, GPUS_PER_NODE, SLICES_PER_GPU, NODES, JOB_SLICES,
       JOB_COUNT, HOLD_SECONDS, STEPS, WARMUP_STEPS, BATCH_SIZE, IMAGE_SIZE, TIME_LIMIT, TOKEN_LIFETIME,
       HALF_LIFE, ID)

# Names: one pattern per '/'-separated segment (see scheduler.services.validate).
NAME_SEGMENT_PATTERN = r"[a-z0-9](?:[a-z0-9_.-]{0,62}[a-z0-9])?"
NAME_MAX_LEN = 255
