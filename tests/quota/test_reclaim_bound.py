"""The reclaim's upper bound is sound: a victim search it fails could never have succeeded.

quota/preemption.py fails a (preemptor, size) search without making it when releasing
every job any search could choose (`_Reach`) still places nothing. That is only right if
(1) `FreeSlices.fit_after_release` says exactly what giving the jobs back and calling
`find` would say, and (2) the real search never finds victims where the bound says none
exist. Both are checked here on drawn worlds: random nodes, jobs (some on GPUs a shrunken
node no longer has room for), accounts, entitlements and guarantees.
"""
from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quota as q
from quota.capacity import FreeSlices
from quota.entitlement import entitlements
from quota.policy import Ledger
from quota.preemption import _choose_victims, _Reach, age_key

ACCOUNTS = ("a", "b", "c", "d")


@st.composite
def worlds(draw):
    spg = draw(st.sampled_from([1, 2, 4]))
    n_nodes = draw(st.integers(1, 4))
    gpus = [draw(st.integers(1, 4)) for _ in range(n_nodes)]
    capacity = q.Capacity(tuple(q.NodeCapacity(f"n{i}", g, spg) for i, g in enumerate(gpus)))
    jobs = []
    for j in range(draw(st.integers(0, 24))):
        node = draw(st.integers(0, n_nodes - 1))
        whole = draw(st.booleans()) and gpus[node] > 0
        if whole:
            m = draw(st.integers(1, gpus[node]))
            start = draw(st.integers(0, gpus[node] - m))
            gs = tuple((i, spg) for i in range(start, start + m))
        else:
            gs = ((draw(st.integers(0, gpus[node] - 1)), draw(st.integers(1, spg))),)
        jobs.append(q.RunningJob(f"j{j}", draw(st.sampled_from(ACCOUNTS)), f"n{node}", gs, float(j)))
    guarantees = {a: draw(st.integers(0, 3)) for a in ACCOUNTS}
    tree = q.AccountTree.build([q.AccountSpec(a, draw(st.sampled_from([1.0, 2.0, 0.5])), guaranteed=guarantees[a])
                                for a in ACCOUNTS])
    extra = {a: draw(st.integers(0, 6)) for a in ACCOUNTS}  # waiting slices on top of what runs
    return capacity, tree, jobs, extra


@given(worlds(), st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fit_after_release_is_give_then_find(world, data):
    capacity, _, jobs, _ = world
    free = FreeSlices(capacity, ((j.node, j.gpu_slices) for j in jobs))  # may over-book: excess
    released = data.draw(st.lists(st.sampled_from(jobs), unique_by=lambda j: j.id)) if jobs else []
    sizes = sorted({1, 2, 3, 4, 8, 12, 16})
    got = free.fit_after_release(sizes, ((j.node, j.gpu_slices) for j in released))
    for j in released:
        free.give(j.node, j.gpu_slices)
    want = {k for k in sizes if free.find(k) is not None}
    assert got == want


@given(worlds())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_search_the_bound_fails_finds_no_victims(world):
    capacity, tree, jobs, extra = world
    free = FreeSlices(capacity, ((j.node, j.gpu_slices) for j in jobs))
    ledger = Ledger(tree)
    running = defaultdict(int)
    for j in jobs:
        ledger.add(j.account, j.slices)
        running[j.account] += j.slices
    demand = {a: float(running[a] + extra[a]) for a in ACCOUNTS}
    entitled = entitlements(tree, capacity.total_slices, demand)
    level = {a: tree.accounts[a].guaranteed for a in tree.order}
    per_account = defaultdict(list)
    for j in sorted(jobs, key=age_key):
        per_account[j.account].append(j)
    sizes = [1, 2, 3, 4, 8]
    reach = _Reach(per_account, set(), free, ledger, entitled, level, sizes)
    failed = 0
    for p in ACCOUNTS:
        for k in sizes:
            if reach.may_place(p, k):
                continue
            failed += 1
            victims = _choose_victims(k, p, per_account, set(), free, ledger, entitled, level, 10_000)
            assert victims is None, (p, k, victims)
    # and the search leaves the tracker as it found it, so the bound stays valid after it
    assert free.fit_after_release(sizes, ()) == {k for k in sizes if free.find(k) is not None}


def test_a_preemptor_its_own_cap_refuses_makes_no_cycle():
    """Below its guarantee with a backlog, but every size it waits for would break its own
    cap: no reclaim can serve it, so `could_act` says no (the simulator skips the cycle), and
    a cycle run anyway decides nothing. One size that fits its cap makes the cycle run."""
    t = q.AccountTree.build([q.AccountSpec("a", 1.0, guaranteed=4, cap=4), q.AccountSpec("b", 1.0)])
    capacity = q.Capacity((q.NodeCapacity("n1", 2, 4),))
    state = q.PolicyState(t, capacity, q.PolicyConfig())
    state.add_running(q.RunningJob("a0", "a", "n1", ((0, 2),), 0.0))
    state.add_running(q.RunningJob("b0", "b", "n1", ((0, 2),), 1.0))
    state.add_running(q.RunningJob("b1", "b", "n1", ((1, 4),), 2.0))
    state.submit(q.PendingRequest("a-big", "a", 4, seq=1.0))
    assert not state.could_act()
    d = state.cycle(10.0)
    assert not d.admissions and not d.preemptions
    state.submit(q.PendingRequest("a-small", "a", 2, seq=2.0))
    assert state.could_act()
    d = state.cycle(11.0)
    assert [p.job_id for p in d.preemptions] == ["b1"]  # the youngest of the account above its share
    assert [a.request_id for a in d.admissions] == ["a-small"]
