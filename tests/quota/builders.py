"""Small fixture builders for policy tests (kueue's habit: cases read as data)."""
from __future__ import annotations

import quota as q


def tree(*specs: tuple, capacity: int | None = None) -> q.AccountTree:
    """tree(("a", 1), ("b", 2, {"guaranteed": 2}), ("b/x", 1, {"parent": "b"}))"""
    out = []
    for spec in specs:
        name, weight, *rest = spec
        opts = rest[0] if rest else {}
        out.append(q.AccountSpec(name, weight, **opts))
    return q.AccountTree.build(out, capacity)


def nodes(*shape: tuple) -> q.Capacity:
    """nodes(("n1", 2, 4)) -> one node with 2 GPUs of 4 slices."""
    return q.Capacity(tuple(q.NodeCapacity(n, g, s) for n, g, s in shape))


def pending(*reqs: tuple) -> tuple[q.PendingRequest, ...]:
    """pending(("p1", "a", 2), ...) with queue order = position."""
    return tuple(q.PendingRequest(rid, acct, k, seq=float(i), submitted_at=float(i)) for i, (rid, acct, k) in enumerate(reqs))


def running(*jobs: tuple) -> tuple[q.RunningJob, ...]:
    """running(("r1", "a", "n1", gpu, slices, started_at), ...)"""
    return tuple(q.RunningJob(jid, acct, node, ((gpu, k),), float(t)) for jid, acct, node, gpu, k, t in jobs)
