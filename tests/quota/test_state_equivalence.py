"""PolicyState (the incremental path) decides exactly as decide(snapshot) does.

Random sequences of submissions, job ends and cycles, on random trees and clusters, under
every ordering: before each cycle the state's snapshot is decided from scratch, and the
incremental cycle must return the same decision. Where `could_act()` says a cycle can be
skipped, the from-scratch decision must have no admissions and no preemptions.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quota as q
from builders import nodes, tree


@st.composite
def sequences(draw):
    spg = draw(st.sampled_from([2, 4]))
    capacity = q.Capacity(tuple(q.NodeCapacity(f"n{i}", draw(st.integers(1, 3)), spg)
                                for i in range(draw(st.integers(1, 3)))))
    total = capacity.total_slices
    specs, budget = [], total
    for i in range(draw(st.integers(1, 4))):
        g = draw(st.integers(0, max(0, min(budget, 3))))
        budget -= g
        cap = draw(st.one_of(st.none(), st.integers(max(g, 1), total)))
        specs.append(q.AccountSpec(f"t{i}", draw(st.integers(1, 4)), guaranteed=g, cap=cap))
        if draw(st.booleans()):
            specs.append(q.AccountSpec(f"t{i}/a", draw(st.integers(1, 3)), parent=f"t{i}", guaranteed=g))
            specs.append(q.AccountSpec(f"t{i}/b", draw(st.integers(1, 3)), parent=f"t{i}"))
    t = q.AccountTree.build(specs, total)
    cfg = q.PolicyConfig(
        ordering=draw(st.sampled_from(q.ORDERINGS)),
        use_history=draw(st.booleans()),
        algorithm=draw(st.sampled_from(q.ALGORITHMS)),
        preemption=draw(st.booleans()),
        reclaim=draw(st.sampled_from(["guarantee", "entitlement"])),
    )
    accounts = t.leaves() + ["nobody"]
    sizes = [1, 1, 2, spg, 2 * spg, 3, 99]
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(accounts), st.sampled_from(sizes),
                  st.floats(0, 10), st.one_of(st.none(), st.floats(1, 100))),
        st.tuples(st.just("finish"), st.integers(0, 50)),
        st.tuples(st.just("cycle"), st.floats(0, 1e4)),
    ), min_size=5, max_size=60))
    return t, capacity, cfg, ops


def same(a: q.Decision, b: q.Decision) -> None:
    assert a.admissions == b.admissions
    assert a.preemptions == b.preemptions
    assert a.waiting == b.waiting
    assert a.entitled == b.entitled
    assert a.allocated == b.allocated
    assert a.demand == b.demand
    assert a.factor == b.factor


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_incremental_cycle_equals_decide_on_its_snapshot(seq):
    t, capacity, cfg, ops = seq
    state = q.PolicyState(t, capacity, cfg)
    usage: dict[str, float] = {}
    now = 0.0
    n = 0
    for op in ops:
        now += 1.0
        if op[0] == "submit":
            _, account, k, seq_jitter, work = op
            state.submit(q.PendingRequest(f"j{n}", account, k, seq=n + seq_jitter, submitted_at=now, work_s=work))
            n += 1
        elif op[0] == "finish" and state.running:
            ids = sorted(state.running, key=str)
            state.finish(ids[op[1] % len(ids)])
        elif op[0] == "cycle":
            usage = {leaf: usage.get(leaf, 0.0) * 0.5 + op[1] for leaf in t.leaves()[:2]}
            metered = op[1] > 5e3  # half the time usage is set first, as a metering period does
            if metered:
                state.set_usage(usage)
            expected = q.decide(state.snapshot(now, usage))
            if not state.could_act():
                assert not expected.admissions and not expected.preemptions
            same(state.cycle(now) if metered else state.cycle(now, usage), expected)
    # the state after all cycles is the decisions applied: capacity holds, nothing is lost
    used = sum(j.slices for j in state.running.values())
    assert used + state.free.total_free == capacity.total_slices


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_unexplained_cycle_decides_the_same(seq):
    t, capacity, cfg, ops = seq
    a, b = q.PolicyState(t, capacity, cfg), q.PolicyState(t, capacity, cfg)
    for i, op in enumerate(ops):
        if op[0] == "submit":
            req = q.PendingRequest(f"j{i}", op[1], op[2], seq=float(i), submitted_at=float(i), work_s=op[4])
            a.submit(req)
            b.submit(req)
        elif op[0] == "cycle":
            da, db = a.cycle(float(i), {}), b.cycle(float(i), {}, explain=False)
            assert da.admissions == db.admissions and da.preemptions == db.preemptions
            assert db.waiting == {}


def test_preempted_jobs_go_back_to_their_place_in_submission_order():
    t = tree(("a", 1), ("b", 1, {"guaranteed": 4}))
    state = q.PolicyState(t, nodes(("n1", 1, 4)))
    for i in range(4):
        state.submit(q.PendingRequest(f"a{i}", "a", 1, seq=float(i)))
    state.submit(q.PendingRequest("a-late", "a", 1, seq=10.0))
    assert len(state.cycle(0.0, {}).admissions) == 4
    state.submit(q.PendingRequest("b0", "b", 4, seq=20.0))
    d = state.cycle(1.0, {})
    assert {p.job_id for p in d.preemptions} == {"a0", "a1", "a2", "a3"}
    assert [a.request_id for a in d.admissions] == ["b0"]
    assert [r.id for r in state.queues["a"]] == ["a0", "a1", "a2", "a3", "a-late"]  # not reversed
    assert [r.seq for r in state.queues["a"]] == [0.0, 1.0, 2.0, 3.0, 10.0]
    assert state.running_slices == {"b": 4}
    assert not state.could_act()  # full, and b is at its guarantee: nothing can change
