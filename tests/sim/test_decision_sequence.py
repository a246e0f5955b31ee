"""The simulator's decisions, pinned: every admission (request, node, slices per GPU) and
every victim, in order, on fixed traces under every policy the simulator offers.

The golden file (decision_sequence.json, beside this test) was written from commit
3fa636d, before the simulator's performance pass (issue 25); any change to what the
policy decides, or to the order in which the engine hands it events, fails here. A few
cases keep their whole sequence, so a failure shows the first line that differs; the
others keep a digest and counts.

To rewrite the golden file after a change that is MEANT to change decisions:
    .venv/bin/python tests/sim/test_decision_sequence.py --write
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import quota as q
from scheduler.sim.engine import SimOptions, simulate
from scheduler.sim.report import POLICIES
from scheduler.sim.synthetic import synthetic
from scheduler.sim.trace import Trace, TraceJob

GOLDEN = Path(__file__).with_name("decision_sequence.json")
FULL = {"guarantee/fair-share", "guarantee/fair-share-reclaim-entitlement", "small/fair-share"}  # whole sequences kept


def _guarantee_trace() -> tuple[Trace, q.AccountTree, q.Capacity]:
    """`big` fills the cluster at t=0; `small`, guaranteed half, arrives at t=10 and reclaims."""
    jobs = [TraceJob(f"b{i}", "big", 0.0, 100.0 + i, 4) for i in range(40)]
    jobs += [TraceJob(f"s{i}", "small", 10.0 + i, 100.0, 4) for i in range(6)]
    tree = q.AccountTree.build([q.AccountSpec("big", 1.0), q.AccountSpec("small", 1.0, guaranteed=8)])
    return Trace(jobs), tree, q.Capacity((q.NodeCapacity("n1", 4, 4),))


def _synthetic(jobs: int, days: float, institutions: int, gpus: int, seed: int):
    t = synthetic(jobs=jobs, days=days, institutions=institutions, gpus=gpus, slices_per_gpu=4, seed=seed)
    return t, t.default_tree(), t.capacity


TRACES = {
    "guarantee": _guarantee_trace,
    "small": lambda: _synthetic(700, 3.0, 12, 48, seed=1),
    "medium": lambda: _synthetic(5000, 8.0, 30, 160, seed=2),
}
CONFIGS = dict(POLICIES)
CONFIGS["fair-share-reclaim-entitlement"] = replace(POLICIES["fair-share"], reclaim="entitlement")
CONFIGS["fair-tree"] = replace(POLICIES["fair-share"], algorithm=q.fairshare.FAIR_TREE)
CASES = [(t, p) for t in ("guarantee", "small") for p in CONFIGS] + [
    ("medium", p) for p in ("fair-share", "finish-time", "static", "fifo")]


def sequence(trace_name: str, policy: str) -> list[str]:
    trace, tree, capacity = TRACES[trace_name]()
    lines: list[str] = []

    def observe(t: float, d: q.Decision) -> None:
        lines.extend(f"{t!r} -{p.job_id}" for p in d.preemptions)
        lines.extend(f"{t!r} +{a.request_id}@{a.node}:{a.gpu_slices}" for a in d.admissions)

    simulate(trace, tree, capacity, CONFIGS[policy], name=policy, options=SimOptions(), observe=observe)
    return lines


def summary(case: str, lines: list[str]) -> dict:
    out = {"admissions": sum(" +" in x for x in lines), "preemptions": sum(" -" in x for x in lines),
           "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}
    if case in FULL:
        out["lines"] = lines
    return out


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("trace_name,policy", CASES)
def test_decision_sequence_is_the_pinned_one(golden, trace_name, policy):
    want = golden[f"{trace_name}/{policy}"]
    got = summary(f"{trace_name}/{policy}", sequence(trace_name, policy))
    if "lines" in want:
        assert got.get("lines", [])[:len(want["lines"])] == want["lines"]
    assert (got["admissions"], got["preemptions"], got["sha256"]) == \
        (want["admissions"], want["preemptions"], want["sha256"])


def test_the_pinned_cases_preempt():
    """The pin covers the reclaim path, not only admissions."""
    data = json.loads(GOLDEN.read_text())
    assert data["guarantee/fair-share"]["preemptions"] > 0
    assert data["small/fair-share"]["preemptions"] > 0
    assert data["medium/fair-share"]["preemptions"] > 0


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_text(json.dumps({f"{t}/{p}": summary(f"{t}/{p}", sequence(t, p)) for t, p in CASES}, indent=0) + "\n")
    print(f"wrote {GOLDEN}")
