"""Reclaim converges: replaying decisions cycle after cycle, two accounts never keep
preempting each other (the potential argument in quota/preemption.py)."""
from __future__ import annotations

import itertools

import pytest

import quota as q
from builders import nodes, tree


def replay(t, capacity, pending, running, cfg, cycles=40):
    """Apply each decision as the scheduler would: victims go back to the head of their queue."""
    seq = itertools.count(1000)
    pending = list(pending)
    running = list(running)
    history = []
    for cycle in range(cycles):
        d = q.decide(q.Snapshot(t, capacity, tuple(pending), tuple(running), config=cfg, now=float(cycle)))
        history.append(len(d.preemptions))
        victims = {p.job_id for p in d.preemptions}
        for job in [j for j in running if j.id in victims]:
            running.remove(job)
            pending.append(q.PendingRequest(job.id, job.account, job.slices, seq=-next(seq)))
        admitted = {a.request_id: a for a in d.admissions}
        for req in [r for r in pending if r.id in admitted]:
            pending.remove(req)
            a = admitted[req.id]
            running.append(q.RunningJob(req.id, a.account, a.node, a.gpu_slices, float(cycle)))
    return history, running


@pytest.mark.parametrize("reclaim", ["guarantee", "entitlement"])
@pytest.mark.parametrize("sizes", [(1, 1), (1, 2), (2, 3), (4, 1)])
def test_two_accounts_stop_preempting_each_other(reclaim, sizes):
    t = tree(("a", 1, {"guaranteed": 4}), ("b", 1, {"guaranteed": 4}))
    capacity = nodes(("n1", 2, 4), ("n2", 1, 4))
    ka, kb = sizes
    pending = [q.PendingRequest(f"a{i}", "a", ka, seq=float(i)) for i in range(12)]
    pending += [q.PendingRequest(f"b{i}", "b", kb, seq=float(i)) for i in range(12)]
    history, running = replay(t, capacity, pending, [], q.PolicyConfig(reclaim=reclaim))
    assert sum(history[5:]) == 0, f"preemptions kept happening: {history}"


def test_late_arrival_reclaims_and_then_everything_is_stable():
    t = tree(("a", 1), ("b", 1, {"guaranteed": 4}))
    capacity = nodes(("n1", 2, 4))
    running = [q.RunningJob(f"r{i}", "a", "n1", ((i // 4, 1),), float(i)) for i in range(8)]
    pending = [q.PendingRequest(f"b{i}", "b", 1, seq=float(i)) for i in range(6)]
    pending += [q.PendingRequest(f"a{i}", "a", 1, seq=float(i)) for i in range(6)]
    history, running = replay(t, capacity, pending, running, q.PolicyConfig())
    assert history[0] == 4 and sum(history[1:]) == 0
    assert sum(j.slices for j in running if j.account == "b") == 4
