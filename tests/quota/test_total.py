"""The policy is total (issue 10, part 2).

For any tree, capacity, queue and usage inside quota.limits' ranges, `quota.decide`,
`quota.PolicyState` and the figures `/v1/share` and the metrics show (fair-share factors,
entitlements, equity measures) return finite, sensible results and never raise. Draws
favour the extremes: weights at both ends of WEIGHT at every depth, guarantees equal to
caps, capacities of the largest nodes, requests of one slice and of a whole node, usage
from 0 to the most an account can hold. Every bound comes from quota.limits.
"""
from __future__ import annotations

import math
import time
import tracemalloc
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import quota as q
from quota import fairshare
from quota import limits as L

SPG_MAX = int(L.SLICES_PER_GPU.high)
GPUS_MAX = int(L.GPUS_PER_NODE.high)
LARGEST_CLUSTER = int(L.NODES.high) * GPUS_MAX * SPG_MAX  # slices
# The most decayed usage an account can hold: the largest cluster charged to it for ever, under
# the longest half-life, sums to rate x half-life / ln 2 (a geometric series).
USAGE_MAX = LARGEST_CLUSTER * L.HALF_LIFE.high / math.log(2)
# Names are '/'-separated segments of at least one character: the deepest tree they allow.
DEEPEST = (L.NAME_MAX_LEN + 1) // 2
TINY = 5e-324  # the smallest positive float, as a usage


def ends_or_any_int(r: L.Range) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([int(r.low), int(r.high)]), st.integers(int(r.low), int(r.high)))


def ends_or_any_float(r: L.Range) -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([float(r.low), float(r.high)]), st.floats(r.low, r.high))


WEIGHTS = ends_or_any_float(L.WEIGHT)
USAGES = st.one_of(st.sampled_from([0.0, TINY, USAGE_MAX]), st.floats(0.0, USAGE_MAX))


# -- drawing a world -------------------------------------------------------------------
@st.composite
def trees(draw) -> q.AccountTree:
    """Up to four levels, one to three children each; guarantees within the parent's."""
    specs: list[q.AccountSpec] = []
    max_depth = draw(st.integers(1, 4))

    def children(parent: str | None, depth: int, budget: int | None) -> None:
        for i in range(draw(st.integers(1, 3))):
            name = f"{parent}/{i}" if parent else f"t{i}"
            top = int(L.GUARANTEED.high) if budget is None else budget
            g = draw(st.one_of(st.sampled_from([0, top]), st.integers(0, top)))
            if budget is not None:
                budget -= g
            cap_low = max(g, int(L.MAX_SLICES.low))
            cap = draw(st.one_of(st.none(), st.just(cap_low), st.integers(cap_low, int(L.MAX_SLICES.high))))
            pend = draw(st.one_of(st.none(), ends_or_any_int(L.MAX_PENDING)))
            specs.append(q.AccountSpec(name, draw(WEIGHTS), parent=parent, guaranteed=g, cap=cap, max_pending=pend))
            if depth < max_depth and draw(st.booleans()):
                children(name, depth + 1, g)

    children(None, 1, None)  # top-level guarantees may pass the capacity (a node left): decide scales them
    # Sometimes a spine "s/0/1/...": two children per level, at either end of WEIGHT, down to the
    # deepest level names allow; following the lighter child, shares fall below the floats.
    levels = draw(st.one_of(st.just(0), st.integers(1, (L.NAME_MAX_LEN - 1) // 2)))
    if levels:
        ends = st.sampled_from([L.WEIGHT.low, L.WEIGHT.high])
        specs.append(q.AccountSpec("s", draw(ends)))
        parent = "s"
        for _ in range(levels):
            w0, w1 = draw(ends), draw(ends)
            specs += [q.AccountSpec(f"{parent}/0", w0, parent=parent), q.AccountSpec(f"{parent}/1", w1, parent=parent)]
            parent = f"{parent}/{0 if w0 <= w1 else 1}"
    return q.AccountTree.build(specs)


@st.composite
def capacities(draw) -> q.Capacity:
    n = draw(st.integers(int(L.NODES.low), 3))  # few nodes, but of any accepted size: the test stays fast
    return q.Capacity(tuple(
        q.NodeCapacity(f"n{i}", draw(ends_or_any_int(L.GPUS_PER_NODE)), draw(ends_or_any_int(L.SLICES_PER_GPU)))
        for i in range(n)
    ))


def sizes_for(capacity: q.Capacity) -> st.SearchStrategy[int]:
    shapes = {1, 2}
    for n in capacity.nodes:
        shapes |= {n.slices_per_gpu, n.slices, max(1, n.slices_per_gpu - 1), n.slices_per_gpu + 1}
    shapes = {k for k in shapes if k in L.JOB_SLICES}
    return st.one_of(st.sampled_from(sorted(shapes)), ends_or_any_int(L.JOB_SLICES))


@st.composite
def configs(draw) -> q.PolicyConfig:
    return q.PolicyConfig(
        ordering=draw(st.sampled_from(q.ORDERINGS)),
        use_history=draw(st.booleans()),
        algorithm=draw(st.sampled_from(q.ALGORITHMS)),
        preemption=draw(st.booleans()),
        reclaim=draw(st.sampled_from(["guarantee", "entitlement"])),
    )


@st.composite
def usages(draw, leaves: list[str]) -> dict[str, float]:
    """Decayed usage: drawn directly, or decayed from records under a half-life in range."""
    if draw(st.booleans()):
        return {leaf: draw(USAGES) for leaf in leaves if draw(st.booleans())}
    half_life = draw(ends_or_any_float(L.HALF_LIFE))
    now = 1e9
    records = [(draw(st.sampled_from(leaves)), draw(USAGES), now - draw(st.floats(0.0, 10 * L.HALF_LIFE.high)))
               for _ in range(draw(st.integers(0, 6)))]
    return q.decayed_usage(records, now, half_life)


@st.composite
def worlds(draw) -> q.Snapshot:
    tree = draw(trees())
    capacity = draw(capacities())
    leaves = tree.leaves()
    others = [n for n in tree.order if not tree.is_leaf(n)][:1] + ["nobody"]  # never admitted
    accounts = st.one_of(st.sampled_from(leaves), st.sampled_from(leaves + others))
    sizes = sizes_for(capacity)

    def requests(prefix: str, n: int, seq0: float) -> tuple[q.PendingRequest, ...]:
        return tuple(q.PendingRequest(f"{prefix}{i}", draw(accounts), draw(sizes), seq=seq0 + i,
                                      submitted_at=draw(st.floats(0.0, 1e6)),
                                      work_s=draw(st.one_of(st.none(), st.floats(0.0, L.TIME_LIMIT.high))))
                     for i in range(n))

    # running jobs come from an earlier decision, so they are a state the system can reach
    first = requests("old", draw(st.integers(0, 12)), 0.0)
    earlier = q.decide(q.Snapshot(tree, capacity, first, config=q.PolicyConfig(preemption=False)))
    running = tuple(q.RunningJob(a.request_id, a.account, a.node, a.gpu_slices, float(i))
                    for i, a in enumerate(earlier.admissions))
    pending = requests("p", draw(st.integers(0, 20)), 100.0)
    usage = draw(usages(leaves))
    # an admin may since have re-declared the nodes (fewer GPUs or other slices under running
    # jobs, nodes gone) or changed the tree (accounts of running jobs gone, moved, capped)
    capacity = draw(st.one_of(st.just(capacity), capacities()))
    tree = draw(st.one_of(st.just(tree), trees()))
    return q.Snapshot(tree, capacity, pending, running, usage, now=2e6, config=draw(configs()))


# -- what totality means -----------------------------------------------------------------
def finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


def check_decision(snap: q.Snapshot, d: q.Decision) -> None:
    assert isinstance(d, q.Decision)
    tree, capacity = snap.tree, snap.capacity
    # every request is admitted or waits with a reason
    admitted = [a.request_id for a in d.admissions]
    assert len(admitted) == len(set(admitted))
    pending_ids = {r.id for r in snap.pending}
    assert set(admitted) <= pending_ids
    assert set(d.waiting) == pending_ids - set(admitted)
    for rid, w in d.waiting.items():
        assert w.request_id == rid and w.reason in q.REASONS and w.message
    # admissions respect every GPU's slices (so the capacity). Running jobs may hold more than
    # a GPU has (its node was re-declared smaller under them): no admission goes there.
    running_ids = {j.id for j in snap.running}
    preempted = {p.job_id for p in d.preemptions}
    assert preempted <= running_ids
    nodes = {n.name: n for n in capacity.nodes}
    held: dict = defaultdict(int)
    alloc: dict = defaultdict(int)
    for job in [j for j in snap.running if j.id not in preempted] + list(d.admissions):
        for g, n in job.gpu_slices:
            held[(job.node, g)] += n
        for a in tree.ancestors(job.account) if job.account in tree else ():
            alloc[a] += job.slices
    capped: set = set()  # accounts with an admission below them: their caps held at every admission
    for adm in d.admissions:
        node = nodes[adm.node]
        assert adm.slices_per_gpu == node.slices_per_gpu
        assert all(0 <= g < node.gpus and n > 0 for g, n in adm.gpu_slices)
        for g, _ in adm.gpu_slices:
            assert held[(adm.node, g)] <= node.slices_per_gpu, f"GPU {g} of {adm.node} holds {held[(adm.node, g)]}"
        capped.update(tree.ancestors(adm.account))
    assert 0 <= d.free_slices(snap) <= capacity.total_slices
    assert d.allocated == {n: alloc[n] for n in tree.order}
    if snap.config.ordering != "fifo":  # fifo is Ray alone: it knows no caps
        for name in capped:
            cap = tree.accounts[name].cap
            assert cap is None or alloc[name] <= cap, f"{name} at {alloc[name]} over its cap {cap}"
    # every figure is finite and in its range
    assert finite(d.entitled.values()) and finite(d.demand.values()) and finite(d.factor.values())
    assert all(e >= 0 for e in d.entitled.values())
    assert all(0.0 <= f <= 1.0 for f in d.factor.values())
    top_entitled = sum(d.entitled.get(a, 0.0) for a in tree.kids(None))
    assert top_entitled <= capacity.total_slices * (1 + 1e-9) + 1e-6


def check_figures(snap: q.Snapshot, d: q.Decision) -> None:
    """What /v1/share and the metrics compute from a snapshot (scheduler.services.share,
    scheduler.loop.publish.equity): finite for every account."""
    tree = snap.tree
    for algorithm in q.ALGORITHMS:
        f = q.fair_share(tree, snap.usage, algorithm)
        for figures in (f.norm_shares, f.raw_usage, f.norm_usage, f.effective_usage, f.factor):
            assert set(figures) == set(tree.order) and finite(figures.values())
        assert all(0.0 <= x <= 1.0 for x in f.factor.values())
        assert all(0.0 <= x <= 1.0 + 1e-9 for x in f.norm_shares.values())
        assert all(0.0 <= x <= 1.0 + 1e-9 for x in f.norm_usage.values())
        for names in (list(tree.kids(None)), list(tree.order)):
            gini = q.usage_gini({a: f.norm_usage[a] for a in names}, {a: f.norm_shares[a] for a in names})
            assert math.isfinite(gini) and 0.0 <= gini < 1.0
    for names in (list(tree.kids(None)), list(tree.order)):
        entitled = {a: d.entitled[a] for a in names if d.entitled[a] > 0}
        actual = {a: float(d.allocated[a]) for a in names}
        jain = q.jain_of_shares(actual, entitled)
        assert math.isfinite(jain) and 0.0 <= jain <= 1.0 + 1e-9
        assert finite(q.share_deviation(actual, entitled, snap.capacity.total_slices).values())


def same(a: q.Decision, b: q.Decision) -> None:
    assert a.admissions == b.admissions
    assert a.preemptions == b.preemptions
    assert a.waiting == b.waiting
    assert a.entitled == b.entitled
    assert a.factor == b.factor


# -- the properties ------------------------------------------------------------------------
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(worlds())
def test_decide_is_total_over_the_accepted_ranges(snap):
    d = q.decide(snap)
    check_decision(snap, d)
    check_figures(snap, d)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(worlds())
def test_policy_state_is_total_and_decides_as_decide(snap):
    state = q.PolicyState(snap.tree, snap.capacity, snap.config)
    for job in snap.running:
        state.add_running(job)
    for req in snap.pending:
        state.submit(req)
    ref = q.decide(state.snapshot(snap.now, snap.usage))
    check_decision(state.snapshot(snap.now, snap.usage), ref)
    same(state.cycle(snap.now, snap.usage), ref)


LAM_ITEMS = st.lists(st.tuples(WEIGHTS, st.integers(0, int(L.MAX_PENDING.high) * int(L.JOB_SLICES.high)),
                               st.integers(0, int(L.MAX_PENDING.high) * int(L.JOB_SLICES.high))),
                     min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, LARGEST_CLUSTER), LAM_ITEMS)
@example(LARGEST_CLUSTER, [(L.WEIGHT.high, 0, 10**6), (L.WEIGHT.low, 0, 10**6), (L.WEIGHT.low, 10**6, 10**6)])
@example(1, [(L.WEIGHT.low, 0, 1), (L.WEIGHT.high, 0, 4096), (L.WEIGHT.low, 0, 3)])
def test_water_fill_is_total(capacity, raw):
    items = [(f"a{i}", w, float(min(a, b)), float(max(a, b))) for i, (w, a, b) in enumerate(raw)]
    out = q.water_fill(capacity, items)
    assert set(out) == {name for name, *_ in items} and finite(out.values())
    sum_lo = sum(lo for _, _, lo, _ in items)
    target = min(capacity, sum(hi for *_, hi in items))
    assert sum(out.values()) == pytest.approx(target, rel=1e-9, abs=1e-6)
    for name, _, lo, hi in items:
        if target >= sum_lo:  # guarantees first, caps hold
            assert lo - 1e-6 <= out[name] <= hi + 1e-6
        else:  # less than the guarantees: scaled down in proportion
            assert out[name] == pytest.approx(lo * target / sum_lo, rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 1e12 * L.HALF_LIFE.high), ends_or_any_float(L.HALF_LIFE))
def test_decay_is_finite_for_any_age_and_half_life(age, half_life):
    f = q.decay_factor(age, half_life)
    assert 0.0 <= f <= 1.0


# -- the probe's cases -------------------------------------------------------------------------
def chain(depth: int) -> q.AccountTree:
    """At every level a heavy leaf `.../a` (the highest weight) beside a light `.../b` (the lowest)
    that holds the next level, so the light path's share is (low / (low + high)) ** depth."""
    specs, parent = [], None
    for d in range(depth):
        for seg, w in (("a", L.WEIGHT.high), ("b", L.WEIGHT.low)):
            name = f"{parent}/{seg}" if parent else seg
            specs.append(q.AccountSpec(name, w, parent=parent))
        parent = f"{parent}/b" if parent else "b"
    tree = q.AccountTree.build(specs)
    assert max(len(n) for n in tree.order) <= L.NAME_MAX_LEN
    return tree


def small_cluster() -> q.Capacity:
    return q.Capacity((q.NodeCapacity("n0", 2, 4), q.NodeCapacity("n1", GPUS_MAX, SPG_MAX)))


@pytest.mark.parametrize("depth", [1, 2, 10, 60, DEEPEST])
def test_extreme_sibling_weights_at_every_depth(depth):
    tree = chain(depth)
    leaves = tree.leaves()
    deepest = "/".join(["b"] * depth)  # the lightest account: its share is below the floats from depth ~55
    capacity = small_cluster()
    pending = tuple(q.PendingRequest(i, leaf, k, seq=float(i)) for i, (leaf, k) in
                    enumerate((leaf, k) for leaf in leaves for k in (1, 4, SPG_MAX)))
    running = tuple(q.RunningJob(f"r{i}", leaf, "n1", ((i, SPG_MAX),), 0.0) for i, leaf in enumerate(leaves[:GPUS_MAX]))
    for usage in ({}, {leaf: USAGE_MAX for leaf in leaves}, {deepest: USAGE_MAX}, {deepest: TINY, "a": USAGE_MAX}):
        for cfg in (q.PolicyConfig(algorithm=a, ordering=o) for a in q.ALGORITHMS for o in q.ORDERINGS):
            snap = q.Snapshot(tree, capacity, pending, running, usage, now=1.0, config=cfg)
            d = q.decide(snap)
            check_decision(snap, d)
            check_figures(snap, d)
        f = q.fair_share(tree, usage, q.CLASSIC).factor
        if not usage:
            assert set(f.values()) == {1.0}
        elif usage.get(deepest) == USAGE_MAX:
            assert f["a"] > 0.0  # the heavy top account used about its share or less
            if depth > 1:
                assert f[deepest] == 0.0  # far beyond a share below the float range
        else:
            assert f[deepest] == 1.0  # its tiny usage is nothing beside the rest


@pytest.mark.parametrize("s", [1e-300, 1e-250, 2.5e-308, math.ldexp(1.0, -1000)])
@pytest.mark.parametrize("u_e", [TINY, 1e-310, 1e-305, 1e-300, 1e-290, 1e-3, 0.5, 1.0])
def test_log_form_of_the_factor_agrees_with_the_direct_form(s, u_e):
    """The form used below the normal floats gives what 2^(-U_E / S) gives where both work."""
    direct = 2.0 ** (-u_e / s)
    via_log = fairshare._factor_of_log2(u_e, math.log2(s))
    assert via_log == pytest.approx(direct, rel=1e-9, abs=1e-300)


def test_huge_and_tiny_usage_side_by_side():
    tree = q.AccountTree.build([
        q.AccountSpec("big", L.WEIGHT.high), q.AccountSpec("small", L.WEIGHT.low),
        q.AccountSpec("small/x", L.WEIGHT.low, parent="small"), q.AccountSpec("small/y", L.WEIGHT.high, parent="small"),
    ])
    capacity = small_cluster()
    pending = tuple(q.PendingRequest(i, a, 1, seq=float(i)) for i, a in enumerate(["big", "small/x", "small/y"] * 3))
    for usage in ({"big": USAGE_MAX, "small/x": USAGE_MAX, "small/y": USAGE_MAX},
                  {"big": TINY, "small/x": USAGE_MAX}, {"big": USAGE_MAX, "small/y": TINY}):
        for algorithm in q.ALGORITHMS:
            snap = q.Snapshot(tree, capacity, pending, (), usage, config=q.PolicyConfig(algorithm=algorithm))
            d = q.decide(snap)
            check_decision(snap, d)
            check_figures(snap, d)
            assert not d.waiting  # room for all nine


def test_guarantees_at_their_caps():
    g = int(L.GUARANTEED.high)
    tree = q.AccountTree.build([
        q.AccountSpec("a", L.WEIGHT.low, guaranteed=g, cap=int(L.MAX_SLICES.high)),
        q.AccountSpec("a/x", L.WEIGHT.high, parent="a", guaranteed=g - 1, cap=g - 1),
        q.AccountSpec("a/y", L.WEIGHT.low, parent="a", guaranteed=1, cap=1),
        q.AccountSpec("b", L.WEIGHT.high, guaranteed=g, cap=g),
    ])
    for capacity in (small_cluster(), q.Capacity()):  # guarantees far above capacity, and no capacity at all
        sizes = [1, 2, 4, SPG_MAX, GPUS_MAX * SPG_MAX, int(L.JOB_SLICES.high)]
        pending = tuple(q.PendingRequest(i, a, k, seq=float(i))
                        for i, (a, k) in enumerate((a, k) for a in ("a/x", "a/y", "b") for k in sizes))
        for cfg in (q.PolicyConfig(ordering=o, reclaim=r) for o in q.ORDERINGS for r in ("guarantee", "entitlement")):
            snap = q.Snapshot(tree, capacity, pending, (), {"a/x": USAGE_MAX}, config=cfg)
            d = q.decide(snap)
            check_decision(snap, d)
            check_figures(snap, d)


def test_node_redeclared_smaller_under_its_jobs():
    """Jobs placed on 2 GPUs x 4 slices; the node is now 1 GPU x 2 slices. Its one GPU holds more
    than it has: full, never refused; the jobs still count; freeing them restores it exactly."""
    tree = q.AccountTree.build([q.AccountSpec("a", cap=8), q.AccountSpec("b")])
    running = (q.RunningJob("r0", "a", "n", ((0, 3),), 0.0), q.RunningJob("r1", "a", "n", ((1, 4),), 1.0),
               q.RunningJob("r2", "a", "n", ((0, 1),), 2.0))
    capacity = q.Capacity((q.NodeCapacity("n", 1, 2),))
    pending = (q.PendingRequest("p", "b", 1, seq=0.0),)
    for cfg in (q.PolicyConfig(), q.PolicyConfig(reclaim="entitlement"), q.PolicyConfig(ordering="fifo")):
        snap = q.Snapshot(tree, capacity, pending, running, config=cfg)
        d = q.decide(snap)
        check_decision(snap, d)
        assert d.allocated["a"] == 8 and not d.admissions and not d.preemptions
        assert d.waiting["p"].reason == q.RESOURCES
        state = q.PolicyState(tree, capacity, cfg)
        for job in running:
            state.add_running(job)
        state.submit(pending[0])
        same(state.cycle(0.0, {}), q.decide(snap))
    state = q.PolicyState(tree, capacity)
    for job in running:
        state.add_running(job)
    assert state.free.total_free == 0  # GPU 0 holds 4 of its 2 slices
    state.finish("r0")
    assert state.free.total_free == 1  # 1 slice is still held, by r2
    state.finish("r1")  # on a GPU the node no longer has: nothing to give back
    assert state.free.total_free == 1
    state.finish("r2")
    assert state.free.total_free == 2 and state.free.find(2) is not None


def test_the_largest_accepted_cluster_is_fast_and_small():
    """10,000 nodes x 64 GPUs x 64 slices (quota.limits' largest): memory follows the GPUs, never
    the slices (one list entry per slice alone would be LARGEST_CLUSTER x 8 bytes, 328 MB)."""
    nodes = tuple(q.NodeCapacity(f"n{i:05d}", GPUS_MAX, SPG_MAX) for i in range(int(L.NODES.high)))
    g = int(L.GUARANTEED.high)
    tree = q.AccountTree.build([
        q.AccountSpec("a", L.WEIGHT.high, guaranteed=g, cap=g),
        q.AccountSpec("a/x", L.WEIGHT.low, parent="a", guaranteed=g),
        q.AccountSpec("b", L.WEIGHT.low),
        q.AccountSpec("b/y", L.WEIGHT.high, parent="b"),
    ])
    sizes = [1, SPG_MAX - 1, SPG_MAX, 2 * SPG_MAX, GPUS_MAX * SPG_MAX]
    pending = tuple(q.PendingRequest(i, ("a/x", "b/y")[i % 2], sizes[i % len(sizes)], seq=float(i))
                    for i in range(3000))
    t0 = time.process_time()  # CPU time: other processes on the machine do not count
    capacity = q.Capacity(nodes)
    first = q.decide(q.Snapshot(tree, capacity, pending, (), {"b/y": USAGE_MAX}))
    running = tuple(q.RunningJob(a.request_id, a.account, a.node, a.gpu_slices, float(i))
                    for i, a in enumerate(first.admissions))
    more = tuple(q.PendingRequest(f"m{i}", "b/y", 1, seq=float(i)) for i in range(1000))
    snap = q.Snapshot(tree, capacity, more, running, {"a/x": USAGE_MAX, "b/y": TINY})
    d = q.decide(snap)
    elapsed = time.process_time() - t0
    assert capacity.total_slices == LARGEST_CLUSTER
    assert {w.reason for w in first.waiting.values()} <= {q.QUOTA_CAP}  # only a's cap stops anything
    assert first.allocated["a"] <= g and first.allocated["b"] > 0
    check_decision(snap, d)
    assert len(d.admissions) == len(more)
    assert elapsed < 3.0, f"two decisions on the largest cluster took {elapsed:.1f} s of CPU"  # ~0.3 s here
    tracemalloc.start()  # apart from the timing: tracing slows allocation down several times
    try:
        q.decide(snap)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, f"one decision on the largest cluster peaked at {peak / 1e6:.0f} MB"  # ~45 MB here


def test_equity_measures_far_apart():
    assert q.jain_index([1e200, 1e-200]) == pytest.approx(0.5)
    assert q.jain_index([1e-200, 1e-200]) == pytest.approx(1.0)
    assert q.jain_index([math.inf, 1.0]) == pytest.approx(0.5)
    assert q.jain_of_shares({"a": 4.0, "b": 4.0}, {"a": 1e-320, "b": 4.0}) == pytest.approx(0.5)
    assert q.gini([1e308, 1e308, 1.0]) == pytest.approx(1 / 3)
    assert q.gini([math.inf, 1.0]) == pytest.approx(0.5)
    assert 0.0 <= q.usage_gini({"a": 1.0, "b": 0.5}, {"a": 1e-310, "b": 0.5}) < 1.0
