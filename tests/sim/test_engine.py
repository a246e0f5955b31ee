"""The simulator on small traces whose right answer is known, under the real policies."""
from __future__ import annotations

import pytest

import quota as q
from scheduler.sim.engine import SimOptions, simulate
from scheduler.sim.report import POLICIES, compare, to_json
from scheduler.sim.synthetic import synthetic
from scheduler.sim.trace import Trace, TraceJob

CLUSTER = q.Capacity((q.NodeCapacity("n1", 4, 4),))  # 16 slices


def tree(*specs):
    return q.AccountTree.build([q.AccountSpec(name, 1.0, **opts) for name, opts in specs])


def late_small_trace() -> Trace:
    """`big` queues 40 one-GPU jobs at t=0; `small` asks for 4 at t=10. All run 100 s."""
    jobs = [TraceJob(f"b{i}", "big", 0.0, 100.0, 4) for i in range(40)]
    jobs += [TraceJob(f"s{i}", "small", 10.0, 100.0, 4) for i in range(4)]
    return Trace(jobs)


def test_fifo_starves_a_late_small_institution_and_fair_share_does_not():
    t = tree(("big", {}), ("small", {}))
    res = compare(late_small_trace(), t, CLUSTER, ["fifo", "fair-share"])
    fifo = res["fifo"].metrics.per_institution["small"]
    fair = res["fair-share"].metrics.per_institution["small"]
    # FIFO: small waits behind all 40 of big's jobs (10 rounds of 100 s). Fair share: at the
    # first round small is owed half the cluster (2 jobs), the other 2 start one round later
    assert fifo["wait_p50_s"] == pytest.approx(990.0)
    assert fair["wait_p50_s"] == pytest.approx(140.0)  # waits 90, 90, 190, 190
    assert fair["wait_p95_s"] == pytest.approx(190.0, rel=0.01)
    assert res["fair-share"].metrics.jain_index > res["fifo"].metrics.jain_index
    assert res["fair-share"].metrics.max_rho < res["fifo"].metrics.max_rho


def test_a_guarantee_reclaims_at_once_and_preempted_work_is_not_lost():
    t = tree(("big", {}), ("small", {"guaranteed": 8}))
    r = simulate(late_small_trace(), t, CLUSTER, POLICIES["fair-share"])
    small = r.metrics.per_institution["small"]
    # two jobs (its guarantee) reclaimed on arrival, two more when those end: waits 0, 0, 100, 100
    assert small["wait_p50_s"] == pytest.approx(50.0) and small["wait_p95_s"] == pytest.approx(100.0)
    assert r.metrics.preemptions == 2  # two of big's 4-slice jobs make room for 8 slices
    work = 44 * 4 * 100.0
    assert r.metrics.utilisation * 16 * r.metrics.makespan_s == pytest.approx(work)  # checkpointed, resumed
    assert r.metrics.jobs == 44


def test_static_quotas_never_borrow_so_utilisation_is_lower():
    t = tree(("busy", {}), ("idle", {}))
    jobs = [TraceJob(f"j{i}", "busy", 0.0, 100.0, 4) for i in range(8)]
    jobs.append(TraceJob("idle-1", "idle", 0.0, 100.0, 1))
    res = compare(Trace(jobs), t, CLUSTER, ["static", "fair-share"])
    static, fair = res["static"].metrics, res["fair-share"].metrics
    assert max(static.series_share["busy"]) <= 0.5  # held to its static half
    assert max(fair.series_share["busy"]) >= 0.75  # borrows what idle does not use
    assert static.utilisation < fair.utilisation
    assert static.makespan_s == pytest.approx(400.0) and fair.makespan_s == pytest.approx(300.0)


def test_preempted_jobs_come_back_in_their_submission_order():
    """Two nodes of 4 slices. `a`'s a0 (100 s) and a1 (300 s) run; at t=10 `b` reclaims its
    guarantee and both are preempted; b's jobs free one node at t=60 and the other at
    t=110. In submission order a0 resumes first (ends at 150) and a1 at 110 (ends at 400);
    reversed, as victims once came back, a1 would end at 350 and a0 at 200."""
    t = tree(("a", {}), ("b", {"guaranteed": 8}))
    cluster = q.Capacity((q.NodeCapacity("n1", 1, 4), q.NodeCapacity("n2", 1, 4)))
    jobs = [TraceJob("a0", "a", 0.0, 100.0, 4), TraceJob("a1", "a", 0.0, 300.0, 4),
            TraceJob("s0", "b", 10.0, 50.0, 4), TraceJob("s1", "b", 10.0, 100.0, 4)]
    r = simulate(Trace(jobs), t, cluster, POLICIES["fair-share"])
    assert r.metrics.preemptions == 2
    assert r.metrics.makespan_s == pytest.approx(400.0)  # a1 resumed second: 110 + 290


def test_all_five_policies_run_deterministically_and_respect_capacity():
    trace = synthetic(jobs=600, days=1, institutions=6, gpus=8, gpus_per_node=4, load=1.3, seed=11)
    t = trace.default_tree()
    opts = SimOptions(samples=100)
    first = to_json(compare(trace, t, trace.capacity, options=opts))
    second = to_json(compare(trace, t, trace.capacity, options=opts))
    strip = lambda d: {p: {k: v for k, v in m.items() if k not in ("wall_s", "events_per_s")} for p, m in d.items()}
    assert strip(first) == strip(second)
    assert list(first) == list(POLICIES)
    for name, m in first.items():
        assert m["jobs"] + m["unfinished"] == 600, name
        if name != "static":  # only a static quota can be smaller than a job
            assert m["unfinished"] == 0, name
        assert 0 < m["utilisation"] <= 1.0 + 1e-9
        assert 0 < m["jain_index"] <= 1.0 + 1e-9
        for key in ("jain_index", "max_share_deviation", "mean_jct_s", "makespan_s", "utilisation", "max_rho",
                    "wait_p95_s"):
            assert key in m
    assert first["fifo"]["preemptions"] == 0


def test_usage_history_changes_who_borrows():
    """Equal weights and demand; `a` used the cluster alone for a day before. With history,
    `b` borrows the odd slices first; without it, the tie goes by name."""
    t = tree(("a", {}), ("b", {}))
    cluster = q.Capacity((q.NodeCapacity("n1", 1, 3),))  # 3 slices: one must be borrowed
    jobs = [TraceJob("warm", "a", 0.0, 86400.0, 3)]
    jobs += [TraceJob(f"{x}{i}", x, 86400.0, 50.0, 1) for i in range(3) for x in "ab"]
    res = compare(Trace(jobs), t, cluster, ["fair-share", "fair-share-no-history"])
    b_hist = res["fair-share"].metrics.per_institution["b"]["wait_p50_s"]
    b_plain = res["fair-share-no-history"].metrics.per_institution["b"]["wait_p50_s"]
    assert b_hist < b_plain
