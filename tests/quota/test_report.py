"""quota.report: one owner of the per-account figures, as tables.

A small tree on two nodes (n1: 2 GPUs x 4 slices, n2: 4 GPUs x 4 slices), before and after
n2 leaves; a reclaim names its kind as data; and on random worlds the figures equal the
decision's own (entitlement, demand, allocation, factor)."""
from __future__ import annotations

import pytest
from builders import nodes, pending, running, tree
from hypothesis import HealthCheck, given, settings
from test_total import worlds

import quota as q

TREE = tree(("inst-a", 1, {"guaranteed": 2}), ("a-x", 1, {"parent": "inst-a"}), ("a-y", 1, {"parent": "inst-a"}),
            ("guarantee-lab", 3))
BOTH = nodes(("n1", 2, 4), ("n2", 4, 4))
N1_ONLY = nodes(("n1", 2, 4))  # n2 left
RUNNING = running(("r1", "a-x", "n1", 0, 2, 0), ("r2", "guarantee-lab", "n1", 1, 1, 0))
PENDING = pending(("p1", "a-x", 2), ("p2", "a-y", 4), ("p3", "guarantee-lab", 16))  # p3: 4 whole GPUs, n2 only
USAGE = {"a-x": 100.0, "guarantee-lab": 300.0}

COLUMNS = ("demand_slices", "entitled_slices", "running_slices", "pending_jobs", "pending_slices")
CASES = {
    # demand a-x 4, a-y 4, guarantee-lab 17 on 24 slices: the lab (weight 3) gets all it
    # asks, inst-a the other 7, split evenly
    "two nodes": (BOTH, {
        "inst-a": (8, 7, 2, 2, 6),
        "a-x": (4, 3.5, 2, 1, 2),
        "a-y": (4, 3.5, 0, 1, 4),
        "guarantee-lab": (17, 17, 1, 1, 16),
    }),
    # n2 left: the 16-slice request fits no node (Infeasible: still pending, no demand),
    # and the 8 slices left are shared over what can still run
    "n2 left": (N1_ONLY, {
        "inst-a": (8, 7, 2, 2, 6),
        "a-x": (4, 3.5, 2, 1, 2),
        "a-y": (4, 3.5, 0, 1, 4),
        "guarantee-lab": (1, 1, 1, 1, 16),
    }),
}


def snap(capacity, **kw) -> q.Snapshot:
    return q.Snapshot(TREE, capacity, PENDING, RUNNING, usage=USAGE, **kw)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_figures_of_a_small_tree(case):
    capacity, expect = CASES[case]
    figures = q.report(snap(capacity))
    by = {f.name: f for f in figures}
    assert [f.name for f in figures] == list(TREE.order)
    for name, row in expect.items():
        assert tuple(getattr(by[name], k) for k in COLUMNS) == pytest.approx(row), name
    # without a decision, allocated is what runs, and nothing is said about waiting
    assert all(f.allocated_slices == f.running_slices and f.waiting == {} for f in figures)
    total = capacity.total_slices
    assert by["inst-a"].share_owed == pytest.approx(7 / total)
    assert by["guarantee-lab"].share_got == pytest.approx(1 / total)
    # usage and shares: rolled up the tree, normalised by the tree's
    assert (by["inst-a"].raw_usage, by["guarantee-lab"].raw_usage) == (100.0, 300.0)
    assert (by["inst-a"].norm_usage, by["a-x"].norm_shares, by["guarantee-lab"].norm_shares) == (0.25, 0.125, 0.75)
    assert by["a-x"].leaf and not by["inst-a"].leaf and by["a-x"].parent == "inst-a"
    assert by["guarantee-lab"].weight == 3 and by["inst-a"].guaranteed_slices == 2


def test_a_node_leaving_changes_the_entitlement_and_the_decision_agrees():
    before, after = q.report(snap(BOTH)), q.report(snap(N1_ONLY))
    lab = {f.name: f for f in before}["guarantee-lab"], {f.name: f for f in after}["guarantee-lab"]
    assert (lab[0].entitled_slices, lab[1].entitled_slices) == (17, 1)
    for s in (snap(BOTH), snap(N1_ONLY)):
        d = q.decide(s)
        assert {f.name: f.entitled_slices for f in q.report(s, d)} == pytest.approx(d.entitled)


def test_with_a_decision_the_figures_are_the_decision_applied():
    s = snap(N1_ONLY)
    d = q.decide(s)
    by = {f.name: f for f in q.report(s, d)}
    assert [a.request_id for a in d.admissions] == ["p1"]  # p2 needs a whole GPU: none is free
    assert by["inst-a"].allocated_slices == 4 and by["inst-a"].allocated_jobs == 2
    assert by["a-x"].allocated_slices == 4 and by["a-x"].running_slices == 2
    assert by["a-y"].waiting == by["inst-a"].waiting == {q.RESOURCES: 1} == {d.reason_of("p2"): 1}
    assert by["guarantee-lab"].waiting == {q.INFEASIBLE: 1}
    assert by["inst-a"].pending_jobs == 2  # the snapshot's, before the decision
    assert by["inst-a"].share_got == pytest.approx(4 / 8)


@pytest.mark.parametrize("reclaim,kind,words", [
    ("entitlement", q.RECLAIM_FAIR_SHARE, "fair share"),
    ("guarantee", q.RECLAIM_GUARANTEE, "guarantee of 2"),
])
def test_a_reclaim_says_its_kind_as_data(reclaim, kind, words):
    """The preemptor is named guarantee-lab: its message holds "guarantee" whatever the mode,
    so only the kind (never the text) can tell the two reclaims apart."""
    t = tree(("guarantee-lab", 1, {"guaranteed": 2}), ("other", 1))
    cap = nodes(("n1", 1, 4))
    run = running(*((f"o{i}", "other", "n1", 0, 1, i) for i in range(4)))
    cfg = q.PolicyConfig(reclaim=reclaim)
    d = q.decide(q.Snapshot(t, cap, pending(("g1", "guarantee-lab", 1), ("g2", "guarantee-lab", 1)), run,
                            config=cfg))
    assert d.preemptions and all(p.kind == kind and words in p.reason for p in d.preemptions)
    assert all(p.for_account == "guarantee-lab" and p.account == "other" for p in d.preemptions)
    by = {f.name: f for f in q.report(q.Snapshot(t, cap, (), run, config=cfg), None)}
    assert by["other"].allocated_slices == 4
    s = q.Snapshot(t, cap, pending(("g1", "guarantee-lab", 1), ("g2", "guarantee-lab", 1)), run, config=cfg)
    after = {f.name: f for f in q.report(s, d)}
    assert after["other"].allocated_slices == 4 - len(d.preemptions)
    assert after["other"].allocated_jobs == 4 - len(d.preemptions)


def test_cluster_equity_reads_the_figures():
    s = snap(N1_ONLY)
    figures = q.report(s, q.decide(s))
    jain, dev, gini = q.cluster_equity(figures)
    top = [f for f in figures if f.parent is None]
    x = [f.allocated_slices / f.entitled_slices for f in top]
    assert jain == pytest.approx(q.jain_index(x))
    assert dev == pytest.approx(max(abs(f.share_got - f.share_owed) for f in top))
    assert 0.0 <= gini < 1.0
    assert q.cluster_equity(q.report(q.Snapshot(TREE, BOTH))) == (1.0, 0.0, 0.0)  # nothing asked: all equal


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(worlds())
def test_figures_equal_the_decisions_own(s):
    d = q.decide(s)
    figures = q.report(s, d)
    by = {f.name: f for f in figures}
    assert {n: f.entitled_slices for n, f in by.items()} == pytest.approx(dict(d.entitled))
    assert {n: f.allocated_slices for n, f in by.items()} == d.allocated
    assert {n: f.fairshare_factor for n, f in by.items()} == pytest.approx(dict(d.factor))
    plain = [n for n in d.demand if n in by and by[n].leaf and by[n].max_slices is None]  # own demand, uncapped
    assert {n: by[n].demand_slices for n in plain} == pytest.approx({n: d.demand[n] for n in plain})
    assert sum(sum(f.waiting.values()) for f in figures if f.parent is None) == sum(
        1 for w in d.waiting.values() if w.account in s.tree)
    jain, dev, gini = q.cluster_equity(figures)
    assert 0.0 <= jain <= 1.0 + 1e-9 and dev >= 0.0 and 0.0 <= gini < 1.0
