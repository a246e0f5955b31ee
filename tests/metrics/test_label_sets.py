"""No value of a vocabulary reaches a metric call without its own label.

Every final job state, pending reason, preemption kind and cycle phase is walked from
its owner (scheduler.vocab, quota) through the real calls the loop's report takes: the
loop's CycleReport into Publisher.publish, then a scrape of the registry. Each value must
land on its own label (none dropped, none raising, none folded into another); the label
sets are exactly the vocabularies (no label nothing produces); and a value outside a set
is refused, not counted."""
from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import quota
from scheduler.loop.report import CycleReport
from scheduler.metrics import exporter, view
from scheduler.metrics.exporter import build_registry
from scheduler.loop.publish import Publisher
from scheduler.vocab import FINAL_STATES, PHASES, JobState

AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LAB = 1  # the account id the reports name


def published(**report) -> dict[str, list]:
    """Publish one cycle's report through the real Publisher; {sample name: [(labels, value)]}."""
    publisher = []
    registry, metrics = build_registry(lambda: publisher[0].view())
    publisher.append(Publisher(None, metrics))
    publisher[0].publish(CycleReport(at=AT, account_names={LAB: "lab"}, **report))
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def by(samples: list, label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples}


def test_every_final_state_is_counted_under_its_own_status():
    got = by(published(finishes=[(LAB, s.value) for s in FINAL_STATES])["fairgpu_account_finished_jobs_total"],
             "status")
    assert got == {s.value.lower(): 1 for s in FINAL_STATES}
    assert "timeout" in got  # the one that was missing


@pytest.mark.parametrize("state", [s for s in JobState if not s.is_finished()])
def test_a_state_that_is_not_final_is_refused(state):
    _registry, metrics = build_registry(lambda: None)
    with pytest.raises(ValueError):
        metrics.job_finished("lab", state.value)


def test_every_preemption_kind_is_counted_under_its_own_reason():
    got = published(preemptions=[(LAB, k) for k in quota.PREEMPTION_KINDS])["fairgpu_account_preemptions_total"]
    assert by(got, "reason") == {k: 1 for k in quota.PREEMPTION_KINDS}


def test_a_kind_the_policy_does_not_make_is_refused():
    _registry, metrics = build_registry(lambda: None)
    for kind in ("node_lost", "other", "reclaim: lab is below its guarantee"):
        with pytest.raises(ValueError):
            metrics.preempted("lab", kind)


def test_every_pending_reason_is_a_gauge_of_its_own():
    """One waiting job per reason (i + 1 for the i-th), through quota.report and the view."""
    reasons = quota.REASONS
    tree = quota.AccountTree.build([quota.AccountSpec("lab", 1.0)])
    capacity = quota.Capacity((quota.NodeCapacity("n1", 1, 4),))
    pending = tuple(quota.PendingRequest(i, "lab", 1, seq=float(i)) for i in range(sum(range(1, len(reasons) + 1))))
    snapshot = quota.Snapshot(tree, capacity, pending=pending, now=AT.timestamp())
    waiting, ids = {}, iter(pending)
    for i, reason in enumerate(reasons):
        for _ in range(i + 1):
            rid = next(ids).id
            waiting[rid] = quota.Waiting(rid, "lab", reason, reason)
    decision = dataclasses.replace(quota.decide(snapshot), admissions=(), waiting=waiting)
    got = published(snapshot=snapshot, decision=decision)["fairgpu_account_pending_jobs"]
    assert {r: v for (labels, v) in got for r in [labels["reason"]] if labels["account"] == "lab"} == \
        {r: i + 1 for i, r in enumerate(reasons)}


def test_every_phase_is_timed_under_its_own_label():
    got = by(published(phases={p: 0.125 * (i + 1) for i, p in enumerate(PHASES)}, duration_s=1.0)[
        "fairgpu_schedule_cycle_phase_seconds_total"], "phase")
    assert got == {p: 0.125 * (i + 1) for i, p in enumerate(PHASES)}


def test_the_label_sets_are_the_vocabularies():
    assert set(exporter.FINISHED_STATUSES) == {s.value.lower() for s in JobState if s.is_finished()}
    assert set(exporter.PREEMPTION_REASONS) == set(quota.PREEMPTION_KINDS)
    assert set(view.PENDING_REASONS) == set(quota.REASONS)
    assert tuple(exporter.CYCLE_PHASES) == PHASES
