"""Table-driven scenarios for quota.decide(): each case names the slices it expects admitted
per account, the jobs preempted, and how many requests wait for each reason."""
from __future__ import annotations

from collections import Counter

import pytest

import quota as q
from builders import nodes, pending, running, tree

T2x4 = nodes(("n1", 2, 4))  # 8 slices on 2 GPUs

CASES = {
    "weights 1:2:3 split 8 slices as water-filling does": dict(
        tree=tree(("a", 1), ("b", 2), ("c", 3)),
        capacity=T2x4,
        pending=pending(*[(f"{acct}{i}", acct, 1) for i in range(6) for acct in "abc"]),
        admitted_per_account={"a": 1, "b": 3, "c": 4},
        reasons={"Priority": 10},
    ),
    "an idle account's share goes to those with demand (work-conserving)": dict(
        tree=tree(("a", 1), ("b", 1)),
        capacity=T2x4,
        pending=pending(*[(f"a{i}", "a", 1) for i in range(10)]),
        admitted_per_account={"a": 8},
        reasons={"Resources": 2},
    ),
    "guarantee comes before weight": dict(
        tree=tree(("a", 10), ("b", 1, {"guaranteed": 4})),
        capacity=T2x4,
        pending=pending(*[(f"a{i}", "a", 1) for i in range(8)], *[(f"b{i}", "b", 1) for i in range(8)]),
        admitted_per_account={"a": 4, "b": 4},
        reasons={"Priority": 8},
    ),
    "a cap holds even with free slices": dict(
        tree=tree(("a", 1, {"cap": 2}), ("b", 1)),
        capacity=T2x4,
        pending=pending(*[(f"a{i}", "a", 1) for i in range(4)]),
        admitted_per_account={"a": 2},
        reasons={"QuotaCap": 2},
    ),
    "a parent's cap binds its sub-accounts": dict(
        tree=tree(("inst", 1, {"cap": 3}), ("inst/x", 1, {"parent": "inst"}), ("inst/y", 1, {"parent": "inst"})),
        capacity=T2x4,
        pending=pending(*[(f"x{i}", "inst/x", 1) for i in range(3)], *[(f"y{i}", "inst/y", 1) for i in range(3)]),
        admitted_per_account={"inst/x": 2, "inst/y": 1},
        reasons={"QuotaCap": 3},
    ),
    "fractional requests stay on one GPU: 3 free on two GPUs is fragmentation": dict(
        tree=tree(("a", 1), ("b", 1)),
        capacity=T2x4,
        running=running(("r1", "a", "n1", 0, 2, 0), ("r2", "a", "n1", 1, 3, 0)),
        pending=pending(("b1", "b", 3)),
        admitted_per_account={},
        reasons={"Fragmentation": 1},
        preemption=False,
    ),
    "whole GPUs all or nothing on one node": dict(
        tree=tree(("a", 1)),
        capacity=nodes(("n1", 1, 4), ("n2", 1, 4)),
        pending=pending(("big", "a", 8), ("one", "a", 4)),
        admitted_per_account={"a": 4},
        reasons={"Infeasible": 1},
    ),
    "a request no node can hold is infeasible, not pending forever": dict(
        tree=tree(("a", 1)),
        capacity=T2x4,
        pending=pending(("huge", "a", 12), ("odd", "a", 6), ("ok", "a", 2)),
        admitted_per_account={"a": 2},
        reasons={"Infeasible": 2},
    ),
    "backfill: a small request behind a blocked large one runs": dict(
        tree=tree(("a", 1)),
        capacity=T2x4,
        running=running(("r1", "a", "n1", 0, 1, 0)),
        pending=pending(("whole2", "a", 8), ("small", "a", 2)),
        admitted_per_account={"a": 2},
        reasons={"Resources": 1},
    ),
    "reclaim: an account below its guarantee preempts the youngest borrower": dict(
        tree=tree(("a", 1), ("b", 1, {"guaranteed": 2})),
        capacity=T2x4,
        running=running(*[(f"r{i}", "a", "n1", i // 4, 1, i) for i in range(8)]),
        pending=pending(("b1", "b", 1), ("b2", "b", 1), ("b3", "b", 1)),
        admitted_per_account={"b": 2},
        preempted={"r7", "r6"},
        reasons={"Resources": 1},
    ),
    "reclaim takes from the account furthest above its entitlement first, youngest within it": dict(
        # entitled a 4.5, c 1.5, b 2: a holds 5 (1.1x), c holds 3 (2x); a's jobs are the youngest
        tree=tree(("a", 3), ("c", 1), ("b", 1, {"guaranteed": 2})),
        capacity=T2x4,
        running=running(*[(f"a{i}", "a", "n1", i // 4, 1, 10 + i) for i in range(5)],
                        *[(f"c{i}", "c", "n1", 1, 1, i) for i in range(3)]),
        pending=pending(("b1", "b", 1), ("b2", "b", 1)),
        admitted_per_account={"b": 2},
        preempted={"c2", "c1"},
        reasons={},
    ),
    "preemption off: the guarantee waits": dict(
        tree=tree(("a", 1), ("b", 1, {"guaranteed": 2})),
        capacity=T2x4,
        running=running(*[(f"r{i}", "a", "n1", i // 4, 1, i) for i in range(8)]),
        pending=pending(("b1", "b", 1)),
        admitted_per_account={},
        preempted=set(),
        reasons={"Resources": 1},
        preemption=False,
    ),
    "a victim is never taken below its own guarantee": dict(
        tree=tree(("a", 1, {"guaranteed": 6}), ("b", 1, {"guaranteed": 2})),
        capacity=T2x4,
        running=running(*[(f"r{i}", "a", "n1", i // 4, 1, i) for i in range(7)]),
        pending=pending(("b1", "b", 1), ("b2", "b", 1), ("b3", "b", 1)),
        admitted_per_account={"b": 2},
        preempted={"r6"},
        reasons={"Resources": 1},
    ),
    "entitlement reclaim takes back the fair share, not just the guarantee": dict(
        tree=tree(("a", 1), ("b", 1)),
        capacity=T2x4,
        running=running(*[(f"r{i}", "a", "n1", i // 4, 1, i) for i in range(8)]),
        pending=pending(*[(f"b{i}", "b", 1) for i in range(6)]),
        admitted_per_account={"b": 4},
        preempted={"r7", "r6", "r5", "r4"},
        reasons={"Resources": 2},
        reclaim="entitlement",
    ),
    "fifo ignores weights and caps, like Ray alone": dict(
        tree=tree(("a", 1, {"cap": 1}), ("b", 9)),
        capacity=T2x4,
        pending=pending(*[(f"a{i}", "a", 1) for i in range(6)], *[(f"b{i}", "b", 1) for i in range(6)]),
        admitted_per_account={"a": 6, "b": 2},
        reasons={"Priority": 4},
        ordering="fifo",
    ),
    "static quotas do not borrow": dict(
        tree=tree(("a", 1), ("b", 1)),
        capacity=T2x4,
        pending=pending(*[(f"a{i}", "a", 1) for i in range(8)]),
        admitted_per_account={"a": 4},
        reasons={"QuotaCap": 4},
        ordering="static",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scenario(name):
    case = CASES[name]
    cfg = q.PolicyConfig(
        ordering=case.get("ordering", "fair-share"),
        preemption=case.get("preemption", True),
        reclaim=case.get("reclaim", "guarantee"),
    )
    snap = q.Snapshot(
        tree=case["tree"], capacity=case["capacity"], pending=case["pending"],
        running=case.get("running", ()), config=cfg,
    )
    d = q.decide(snap)
    slices = Counter()
    for a in d.admissions:
        slices[a.account] += a.slices
    assert dict(slices) == case["admitted_per_account"]
    if "preempted" in case:
        assert {p.job_id for p in d.preemptions} == case["preempted"]
    assert dict(Counter(w.reason for w in d.waiting.values())) == case["reasons"]
    # every request is either admitted or waiting with a reason, never both
    admitted = {a.request_id for a in d.admissions}
    assert admitted.isdisjoint(d.waiting)
    assert admitted | set(d.waiting) == {r.id for r in case["pending"]}


def test_admissions_carry_ray_shapes():
    d = q.decide(q.Snapshot(tree(("a", 1)), nodes(("n1", 2, 4)), pending(("f", "a", 1), ("w", "a", 4))))
    by_id = {a.request_id: a for a in d.admissions}
    assert by_id["f"].num_gpus == 0.25 and len(by_id["f"].gpu_slices) == 1
    assert by_id["w"].num_gpus == 1.0 and by_id["w"].gpu_slices[0][1] == 4


def test_best_fit_keeps_whole_gpus_free():
    # GPU 0 has 1 slice in use; a 2-slice request goes there, leaving GPU 1 whole for a 4-slice one
    d = q.decide(q.Snapshot(tree(("a", 1)), nodes(("n1", 2, 4)),
                            pending(("two", "a", 2), ("four", "a", 4)),
                            running(("r", "a", "n1", 0, 1, 0))))
    by_id = {a.request_id: a for a in d.admissions}
    assert by_id["two"].gpu_slices == ((0, 2),)
    assert by_id["four"].gpu_slices == ((1, 4),)


def test_preempted_admission_names_its_victims():
    snap = q.Snapshot(tree(("a", 1), ("b", 1, {"guaranteed": 4})), nodes(("n1", 1, 4)),
                      pending(("b1", "b", 4)),
                      running(*[(f"r{i}", "a", "n1", 0, 1, i) for i in range(4)]))
    d = q.decide(snap)
    assert [a.request_id for a in d.admissions] == ["b1"]
    assert set(d.admissions[0].preempts) == {"r0", "r1", "r2", "r3"}
    assert all("below its guarantee" in p.reason for p in d.preemptions)


def test_unknown_and_inner_accounts_are_infeasible():
    t = tree(("inst", 1), ("inst/x", 1, {"parent": "inst"}))
    d = q.decide(q.Snapshot(t, nodes(("n1", 1, 4)), pending(("p1", "ghost", 1), ("p2", "inst", 1))))
    assert d.waiting["p1"].reason == "Infeasible" and "does not exist" in d.waiting["p1"].message
    assert d.waiting["p2"].reason == "Infeasible" and "sub-accounts" in d.waiting["p2"].message
