"""estimate_starts: the policy replayed forward gives each pending job a position and an
expected start (Slurm's `squeue --start`)."""
from __future__ import annotations

from builders import nodes, pending, running, tree

import quota as q
from quota.estimate import Estimate, estimate_starts


def snap(pend, run=(), accounts=(("a", 1), ("b", 1)), now=100.0, cap=(("n1", 1, 4),)):
    return q.Snapshot(tree(*accounts), nodes(*cap), pending=pend, running=run, now=now)


def test_jobs_start_as_running_jobs_end_in_the_policys_order():
    s = snap(pending(("p1", "a", 2), ("p2", "b", 2), ("p3", "a", 4)),
             running(("r1", "a", "n1", 0, 2, 0.0), ("r2", "b", "n1", 0, 2, 50.0)))
    got = estimate_starts(s, ends={"r1": 130.0, "r2": 160.0}, runtimes={"p1": 60.0, "p2": 60.0, "p3": 10.0})
    # r1 ends at 130: a then holds nothing, below its share, so a's p1 takes its slices; at
    # 160 r2's slices go to b's p2; p3 needs the whole GPU: when p2 ends, at 220
    assert got == {"p1": Estimate(1, 130.0), "p2": Estimate(2, 160.0), "p3": Estimate(3, 220.0)}


def test_a_free_slice_means_now():
    s = snap(pending(("p1", "a", 1)))
    assert estimate_starts(s, ends={}, runtimes={}) == {"p1": Estimate(1, 100.0)}


def test_without_expected_ends_there_is_a_position_but_no_start():
    s = snap(pending(("p1", "a", 2), ("p2", "a", 2)), running(("r1", "b", "n1", 0, 4, 0.0)))
    assert estimate_starts(s, ends={}, runtimes={}) == {"p1": Estimate(1, None), "p2": Estimate(2, None)}


def test_the_horizon_bounds_the_replay():
    s = snap(pending(("p1", "a", 4)), running(("r1", "b", "n1", 0, 4, 0.0)))
    assert estimate_starts(s, ends={"r1": 100.0 + 10 * 86400}, runtimes={}, horizon_s=86400) == {
        "p1": Estimate(1, None)}


def test_an_infeasible_job_never_starts():
    s = snap(pending(("p1", "a", 8), ("p2", "a", 1)))
    got = estimate_starts(s, ends={}, runtimes={})
    assert got["p2"] == Estimate(1, 100.0) and got["p1"] == Estimate(2, None)
