"""Property tests for quota.decide() with hypothesis.

For random trees, clusters, running jobs and queues:
- allocation never exceeds any GPU's slices (so never the capacity);
- caps hold for every account after the decision;
- guarantees are met whenever demanded (1-slice requests, preemption on);
- work-conserving: no waiting request fits a placement and its caps;
- the same snapshot gives the same decision.
"""
from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quota as q


@st.composite
def scenarios(draw, one_slice=False):
    n_top = draw(st.integers(1, 4))
    spg = draw(st.sampled_from([2, 4]))
    n_nodes = draw(st.integers(1, 3))
    gpus = [draw(st.integers(1, 3)) for _ in range(n_nodes)]
    capacity = q.Capacity(tuple(q.NodeCapacity(f"n{i}", g, spg) for i, g in enumerate(gpus)))
    total = capacity.total_slices
    specs = []
    budget = total
    for i in range(n_top):
        g = draw(st.integers(0, max(0, min(budget, 4))))
        budget -= g
        cap = draw(st.one_of(st.none(), st.integers(g, total))) if not one_slice else draw(
            st.one_of(st.none(), st.integers(max(g, 1), total)))
        specs.append(q.AccountSpec(f"t{i}", draw(st.integers(1, 5)), guaranteed=g, cap=cap))
        if draw(st.booleans()):
            g_child = draw(st.integers(0, g))
            specs.append(q.AccountSpec(f"t{i}/a", draw(st.integers(1, 3)), parent=f"t{i}", guaranteed=g_child))
            specs.append(q.AccountSpec(f"t{i}/b", draw(st.integers(1, 3)), parent=f"t{i}",
                                       guaranteed=draw(st.integers(0, g - g_child))))
    tree = q.AccountTree.build(specs, total)
    leaves = tree.leaves()
    sizes = [1] if one_slice else [1, 1, 2, spg, 2 * spg, 3]
    first = tuple(
        q.PendingRequest(f"old{i}", draw(st.sampled_from(leaves)), draw(st.sampled_from(sizes)), seq=float(i))
        for i in range(draw(st.integers(0, 12)))
    )
    # running jobs come from an earlier decision, so they are a state the system can reach
    earlier = q.decide(q.Snapshot(tree, capacity, first, config=q.PolicyConfig(preemption=False)))
    running = tuple(q.RunningJob(a.request_id, a.account, a.node, a.gpu_slices, float(i))
                    for i, a in enumerate(earlier.admissions))
    pending = tuple(
        q.PendingRequest(f"p{i}", draw(st.sampled_from(leaves)), draw(st.sampled_from(sizes)), seq=100.0 + i)
        for i in range(draw(st.integers(0, 16)))
    )
    usage = {leaf: draw(st.floats(0, 1e4)) for leaf in leaves}
    cfg = q.PolicyConfig(
        preemption=draw(st.booleans()) if not one_slice else True,
        algorithm=draw(st.sampled_from(q.ALGORITHMS)),
        reclaim=draw(st.sampled_from(["guarantee", "entitlement"])),
    )
    return q.Snapshot(tree, capacity, pending, running, usage, now=50.0, config=cfg)


def final_state(snap: q.Snapshot, d: q.Decision):
    preempted = {p.job_id for p in d.preemptions}
    used: dict = defaultdict(int)
    alloc: dict = defaultdict(int)
    for job in snap.running:
        if job.id in preempted:
            continue
        for g, n in job.gpu_slices:
            used[(job.node, g)] += n
        for a in snap.tree.ancestors(job.account):
            alloc[a] += job.slices
    for adm in d.admissions:
        for g, n in adm.gpu_slices:
            used[(adm.node, g)] += n
        for a in snap.tree.ancestors(adm.account):
            alloc[a] += adm.slices
    return used, alloc


def tracker_for(snap: q.Snapshot, used) -> q.FreeSlices:
    free = q.FreeSlices(snap.capacity)
    for (node, g), n in used.items():
        free.take(node, ((g, n),))
    return free


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_capacity_caps_and_work_conservation(snap):
    d = q.decide(snap)
    used, alloc = final_state(snap, d)
    spg = {n.name: n.slices_per_gpu for n in snap.capacity.nodes}
    for (node, g), n in used.items():
        assert n <= spg[node], f"GPU {g} of {node} holds {n} slices"
    assert sum(used.values()) <= snap.capacity.total_slices
    for name in snap.tree.order:
        cap = snap.tree.accounts[name].cap
        if cap is not None:
            assert alloc[name] <= cap, f"{name} at {alloc[name]} over its cap {cap}"
    assert d.allocated == {n: alloc[n] for n in snap.tree.order}
    free = tracker_for(snap, used)
    for w in d.waiting.values():
        if w.reason in (q.INFEASIBLE, q.QUOTA_CAP):
            continue
        req = next(r for r in snap.pending if r.id == w.request_id)
        assert free.find(req.slices) is None, f"{req} waits ({w.reason}) although it fits"
    # every admission has a shape Ray can start: a fraction of one GPU, or whole GPUs
    for adm in d.admissions:
        assert adm.num_gpus < 1 and len(adm.gpu_slices) == 1 or adm.num_gpus == int(adm.num_gpus)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(one_slice=True))
def test_guarantees_met_whenever_demanded(snap):
    d = q.decide(snap)
    _, alloc = final_state(snap, d)
    for leaf in snap.tree.leaves():
        g = snap.tree.accounts[leaf].guaranteed
        demand = d.demand.get(leaf, 0.0)
        assert alloc[leaf] >= min(g, demand), f"{leaf}: {alloc[leaf]} slices, guarantee {g}, demand {demand}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_same_snapshot_same_decision(snap):
    a, b = q.decide(snap), q.decide(snap)
    assert a.admissions == b.admissions
    assert a.preemptions == b.preemptions
    assert a.waiting == b.waiting
