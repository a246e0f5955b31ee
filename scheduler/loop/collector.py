"""The garbage collector's thresholds for a process that runs the scheduling loop.

The loop keeps a row and a request per waiting job: at 100k waiting jobs the process
tracks over 300k objects. CPython's default thresholds (700, 10, 10) then run a young
collection every 700 net allocations, and a full one whenever the objects that survived
young collections reach a quarter of the old generation. A cycle allocates tens of
thousands of short-lived objects, so many are still alive at some young collection and
are promoted, and a full collection, which walks every tracked object, comes every few
dozen cycles. With the first threshold at YOUNG, most of those objects are gone before a
young collection looks at them, and full collections become rare (docs/benchmarks.md,
"Fifth pass").

Invariants: only thresholds change. Nothing is frozen or disabled, so cyclic garbage is
still collected (a little later) and nothing grows without bound. `tune()` never lowers
a threshold another part of the process raised, and is idempotent.
"""
from __future__ import annotations

import gc

YOUNG = 10_000


def tune() -> tuple[int, int, int]:
    """Raise the young generation's threshold to YOUNG; returns the thresholds now set."""
    young, middle, old = gc.get_threshold()
    if young and young < YOUNG:  # 0 means collection is off: leave that choice alone
        gc.set_threshold(YOUNG, middle, old)
    return gc.get_threshold()
