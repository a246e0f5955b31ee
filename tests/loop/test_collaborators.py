"""The loop's collaborators stand on their own: each is built from what it is handed (an
executor, a transaction, a clock), with no SchedulingLoop behind it; the loop runs its
phases from the one PHASES tuple; the report books through one function; and what a
RUNNING transition sets is written once (the rows the loop keeps are the rows stored)."""
from __future__ import annotations

from loop_world import make_world

from scheduler.loop import apply
from scheduler.loop.nodes import NodeWatch
from scheduler.loop.report import CycleReport, Health
from scheduler.loop.watch import AttemptWatch
from scheduler.services.snapshot import SnapshotLoader, active_jobs
from scheduler.store import JobState, session_scope
from scheduler.store.transitions import running_values, transition
from scheduler.vocab import PHASES, RAY_REFUSED


def test_a_node_watch_holds_a_refused_job_back_on_its_own_clock_once_committed(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit()
    mono = [100.0]
    nodes = NodeWatch(w.executor, lambda: session_scope(w.engine), max_refusals=3, discover=False,
                      monotonic=lambda: mono[0])
    loader = SnapshotLoader()

    def held() -> dict:
        with session_scope(w.engine, readonly=True) as s:
            return nodes.hold_back(loader.sync(s), loader.by_framework)

    try:  # a refusal noted in a transaction that fails is not counted
        with session_scope(w.engine) as s:
            nodes.note_refusal(s, job_id, "no such node")
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert held() == {}
    with session_scope(w.engine) as s:
        why = nodes.note_refusal(s, job_id, "no such node")
    assert "trying again in 1 s (refusal 1 of 3)" in why
    assert held() == {job_id: (RAY_REFUSED, why)}
    mono[0] += 1.0  # its backoff is over
    assert held() == {}
    nodes.capacity_changed()
    with session_scope(w.engine) as s:
        assert "refusal 1 of 3" in nodes.note_refusal(s, job_id, "again")  # counting starts over


def test_an_attempt_watch_ends_a_job_past_its_limit_through_the_end_it_is_handed(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit()
    with session_scope(w.engine) as s:
        s.get(type(w.job(job_id)), job_id).time_limit_s = 5.0
    w.loop.run_once()
    w.executor.begin(job_id, w.now[0].timestamp())
    w.tick(6)
    ended = []

    def end(s, job, report, lost, rows=None):
        ended.append((job.id, lost.final, lost.reason))
        return apply.Ended(apply.Outcome.ENDED, 0.0, lost.final)

    watch = AttemptWatch(w.executor, apply.UsageMeter(), end, discover=False)
    loader = SnapshotLoader()
    with session_scope(w.engine) as s:
        out = watch.time_out(s, loader.sync(s), loader.timed, w.now[0], CycleReport(at=w.now[0]))
    assert out == [job_id] and ended == [(job_id, JobState.TIMEOUT, "TimeLimit")]
    assert w.job(job_id).state == JobState.RUNNING  # the watch decides; the end it was handed acts


def test_a_cycle_runs_the_phases_of_the_one_tuple_in_order(tmp_path):
    w = make_world(tmp_path)
    w.submit()
    report = w.loop.run_once()
    assert tuple(report.phases) == PHASES
    assert all(seconds >= 0 for seconds in report.phases.values())


def test_the_report_books_charges_and_ends_in_one_function():
    from datetime import UTC, datetime
    from types import SimpleNamespace

    report = CycleReport(at=datetime(2026, 1, 1, tzinfo=UTC))
    job = SimpleNamespace(id=7, account_id=3)
    report.count(job, charged=10.0)
    report.count(job, charged=0.0, state=JobState.TIMEOUT)
    report.count(SimpleNamespace(id=8, account_id=3), state=JobState.CANCELLED, by_loop=False)
    report.count(SimpleNamespace(id=9, account_id=4), state=JobState.SUCCEEDED, ray_start_delay=0.5)
    assert report.usage == {3: 10.0}
    assert report.ended == [7, 8, 9] and report.finished == 2  # the cancel was the API's, not the loop's
    assert report.finishes == [(3, "TIMEOUT"), (3, "CANCELLED"), (4, "SUCCEEDED")]
    assert report.ray_start_delays == [0.5]


def test_health_counts_failures_backs_off_and_keeps_publishing_failures_apart():
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    health = Health()
    assert health.backoff(0.5, 30.0) == 0.5
    for _ in range(3):
        health.failed(ValueError("boom\nmore"), at)
    assert (health.now.consecutive_failures, health.now.failures_total) == (3, 3)
    assert health.now.last_error == "ValueError: boom" and health.backoff(0.5, 30.0) == 2.0
    health.publish_failed(KeyError("x"))
    health.succeeded(at)
    assert (health.now.consecutive_failures, health.now.failures_total, health.now.publish_failures_total) == (0, 3, 1)
    assert health.now.failing_since is None and health.now.last_success_at == at


def test_the_rows_the_loop_keeps_for_its_admissions_are_the_rows_stored(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit(slices=2)
    with session_scope(w.engine) as s:
        (row,) = active_jobs(s, [job_id])
        kept = apply.admit_many(s, [(row, "n1", [(0, 2)])], at=w.now[0], fresh=True, rows=(rows := []))
    assert kept == {job_id}
    with session_scope(w.engine, readonly=True) as s:
        assert rows == active_jobs(s, [job_id])  # as running_values says, to the byte
        stored = s.get(type(w.job(job_id)), job_id)
        values = running_values(row, at=w.now[0], message="m", node="n1")
        assert (stored.state, stored.version, stored.attempts, stored.started_at, stored.admitted_at) == \
            (values["state"], values["version"], values["attempts"], values["started_at"], values["admitted_at"])
    other = w.submit()
    with session_scope(w.engine) as s:  # one transition writes what running_values says, too
        job = s.get(type(w.job(other)), other)
        want = running_values(job, at=w.now[0], message="by hand", node="n1")
        transition(s, job, JobState.RUNNING, at=w.now[0], message="by hand", node="n1", refresh=False)
    stored = w.job(other)
    assert {k: getattr(stored, k) for k in want} == want
