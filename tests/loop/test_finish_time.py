"""Finish-time fairness, live: `algorithm finish-time` is accepted by the server's settings,
and the live loop (the real SchedulingLoop on a real SQLite file, a fake Ray) admits the
jobs of a small trace exactly when, and in the order, the simulator's "finish-time" policy
does on the same trace, cluster and tree: one policy, through the same quota code.

The trace is chosen so the ordering matters: at t=100 the one GPU frees and three
accounts wait; FIFO would start b's two long jobs (submitted first), finish-time starts
a's and c's short ones (largest finish-time fairness ratio first)."""
from __future__ import annotations

import pytest
from loop_world import T0, make_world

from scheduler.services import settings
from scheduler.services.accounts import account_specs
from scheduler.services.capacity import load_capacity
from scheduler.sim.engine import simulate
from scheduler.sim.report import POLICIES
from scheduler.sim.trace import Trace, TraceJob
from scheduler.store import JobState, session_scope

import quota

# id, account, submitted (s), run time (s), slices; ids in submission order
TRACE = [("j1", "a", 0, 100, 4), ("j2", "b", 10, 300, 2), ("j3", "b", 10, 300, 2), ("j4", "c", 10, 50, 2),
         ("j5", "a", 10, 20, 2), ("j6", "c", 20, 40, 2)]


def simulated(policy: str, tree, capacity) -> dict[str, float]:
    """{job: start (s)} under the simulator's policy of that name."""
    starts: dict[str, float] = {}

    def observe(t, decision):
        for adm in decision.admissions:
            starts.setdefault(adm.request_id, t)

    trace = Trace([TraceJob(i, a, float(s), float(d), k) for i, a, s, d, k in TRACE])
    result = simulate(trace, tree, capacity, POLICIES[policy], name=policy, observe=observe)
    assert result.metrics.unfinished == 0
    return starts


def live(tmp_path) -> tuple[dict[str, float], object, object]:
    """{job: start (s)} on the live loop, with the setting set as an admin would; and the
    live tree and capacity, as `simulate --from-db` reads them."""
    w = make_world(tmp_path, accounts=(("a", 1.0), ("b", 1.0), ("c", 1.0)))
    with session_scope(w.engine) as s:
        assert settings.set_setting(s, "algorithm", "finish-time") == "finish-time"
        assert settings.policy_settings(s).config == quota.PolicyConfig(ordering="finish-time")
        tree, capacity = quota.AccountTree.build(account_specs(s)), load_capacity(s)
    ids: dict[str, int] = {}
    ends: dict[str, float] = {}
    times = sorted({float(s) for _, _, s, _, _ in TRACE} | {0.0})
    t = 0.0
    while True:  # each instant: Ray's completions, then arrivals, then one cycle (the simulator's order)
        due = [j for j, e in ends.items() if e == t]
        for j in due:  # Ray reports the jobs that ended now
            w.executor.finish(ids[j])
        for i, a, s, d, k in TRACE:
            if s == t:
                ids[i] = w.submit(seconds=float(d), slices=k, account=a)
        w.loop.run_once()
        for i, job_id in ids.items():
            job = w.job(job_id)
            if i not in ends and job.state != JobState.PENDING:
                ends[i] = (job.started_at - T0).total_seconds() + dict((x[0], x[3]) for x in TRACE)[i]
        upcoming = [x for x in times if x > t] + [e for e in ends.values() if e > t]
        if not upcoming:
            break
        nxt = min(upcoming)
        w.tick(nxt - t)
        t = nxt
    starts = {i: (w.job(j).started_at - T0).total_seconds() for i, j in ids.items()}
    assert all(w.job(j).state == JobState.SUCCEEDED for j in ids.values()), {i: (w.job(j).state, s) for (i, j), s in zip(ids.items(), starts.values())}
    return starts, tree, capacity


def test_the_live_loop_admits_as_the_simulator_does_under_finish_time(tmp_path):
    got, tree, capacity = live(tmp_path)
    want = simulated("finish-time", tree, capacity)
    assert got == pytest.approx(want)
    order = sorted(got, key=lambda j: (got[j], j))
    assert order[:3] == ["j1", "j4", "j5"] and got["j5"] == got["j4"] == 100  # the short jobs first
    fifo = simulated("fifo", tree, capacity)
    assert fifo["j2"] == fifo["j3"] == 100 and fifo["j5"] > 100  # what FIFO would have done
    assert simulated("fair-share", tree, capacity)["j5"] > 100  # and fair share (a just used the GPU)


def test_the_setting_names_the_algorithms_it_takes(tmp_path):
    w = make_world(tmp_path)
    with session_scope(w.engine) as s, pytest.raises(settings.Invalid, match=(
            "algorithm must be one of classic, fair-tree, finish-time")):
        settings.set_setting(s, "algorithm", "themis")
    with session_scope(w.engine) as s:
        assert settings.policy_settings(s).config.ordering == "fair-share"
