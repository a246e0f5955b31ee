"""The job status machine: every pair of states, timestamps, events, requeue."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import select

from scheduler.store import (
    ALLOWED,
    InvalidTransition,
    Job,
    JobEvent,
    JobState,
    StaleJob,
    session_scope,
    transition,
)
from store_helpers import T0, later, make_account, make_job

P, R, S, F, C, T = (JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                    JobState.TIMEOUT)

EXPECTED_ALLOWED = {(P, R), (P, C), (P, F), (R, S), (R, F), (R, C), (R, P), (R, T),
                    (F, P), (C, P), (T, P)}  # requeue after an end (not after success)
# A path from PENDING to each state, to set up the "from" side of a pair.
PATH_TO = {P: [], R: [R], S: [R, S], F: [F], C: [C], T: [R, T]}


def test_allowed_table_is_the_documented_machine():
    assert {(a, b) for a, targets in ALLOWED.items() for b in targets} == EXPECTED_ALLOWED
    assert set(ALLOWED) == set(JobState)


def test_state_predicates():
    assert {s for s in JobState if s.is_finished()} == {S, F, C, T}
    assert {s for s in JobState if s.is_active()} == {P, R}


def _walk(session, job, states):
    for i, state in enumerate(states):
        job = transition(session, job, state, at=later(i + 1))
    return job


@pytest.mark.parametrize("src,dst", list(itertools.product(JobState, JobState)), ids=lambda s: s.value)
def test_every_pair(store, src, dst):
    with session_scope(store) as s:
        job = _walk(s, make_job(s), PATH_TO[src])
        assert job.state is src
    with session_scope(store) as s:
        if (src, dst) in EXPECTED_ALLOWED:
            moved = transition(s, job, dst, at=later(10))
            assert moved.state is dst and moved.version == job.version + 1
        else:
            with pytest.raises(InvalidTransition, match=f"from {src.value} to {dst.value}"):
                transition(s, job, dst, at=later(10))
    with session_scope(store) as s:
        assert s.get(Job, job.id).state is (dst if (src, dst) in EXPECTED_ALLOWED else src)


def test_lifecycle_timestamps_and_events(store):
    with session_scope(store) as s:
        job = make_job(s, slices=2)
        assert (job.state, job.version, job.queue_seq) == (P, 0, T0.timestamp())
        job = transition(s, job, R, at=later(1), node="n1", gpu=0, gpu_slices=[[0, 2]], ray_task_id="t1")
        assert job.admitted_at == later(1) and job.started_at == later(1) and job.attempts == 1
        job = transition(s, job, S, at=later(5), result={"loss": 0.1})
        job_id = job.id
    with session_scope(store) as s:
        job = s.get(Job, job_id)
        assert job.finished_at == later(5) and job.result == {"loss": 0.1} and job.version == 2
        assert (job.node, job.gpu, job.gpu_slices, job.ray_task_id) == ("n1", 0, [[0, 2]], "t1")
        events = s.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        assert [(e.kind, e.at) for e in events] == [("submitted", T0), ("admitted", later(1)), ("finished", later(5))]


@pytest.mark.parametrize(
    "steps,kinds",
    [
        ([(F, None)], ["submitted", "failed"]),
        ([(C, None)], ["submitted", "cancelled"]),
        ([(R, "started"), (F, None)], ["submitted", "started", "failed"]),
        ([(R, None), (C, None)], ["submitted", "admitted", "cancelled"]),
        ([(R, None), (P, None)], ["submitted", "admitted", "requeued"]),
    ],
)
def test_event_kinds(store, steps, kinds):
    with session_scope(store) as s:
        job = make_job(s)
        for i, (state, event) in enumerate(steps):
            job = transition(s, job, state, at=later(i + 1), event=event)
        got = s.exec(select(JobEvent.kind).where(JobEvent.job_id == job.id).order_by(JobEvent.id)).all()
    assert got == kinds


def test_failure_reason_and_error(store):
    with session_scope(store) as s:
        job = transition(s, make_job(s), R, at=later(1))
        job = transition(s, job, F, at=later(2), reason="OOM", message="CUDA out of memory", error="Traceback...")
    assert (job.reason, job.reason_message, job.error, job.finished_at) == ("OOM", "CUDA out of memory", "Traceback...", later(2))


def test_pending_reason_is_cleared_on_admission(store):
    with session_scope(store) as s:
        job = make_job(s)
        job = s.get(Job, job.id)
        job.reason, job.reason_message = "Resources", "no free slices"
        s.flush()
        job = transition(s, job, R, at=later(1))
    assert job.reason is None and job.reason_message is None


def test_preemption_requeues_and_clears_placement(store):
    with session_scope(store) as s:
        account = make_account(s)
        job = make_job(s, account)
        job = transition(s, job, R, at=later(1), node="n1", gpu=1, gpu_slices=[[1, 1]], ray_task_id="t")
        job = transition(s, job, P, at=later(2), event="preempted", reason="Preempted", message="reclaimed by b")
        assert job.state is P and job.preemptions == 1 and job.attempts == 1
        assert (job.node, job.gpu, job.gpu_slices, job.ray_task_id) == (None, None, [], None)
        assert (job.admitted_at, job.started_at, job.finished_at) == (None, None, None)
        assert job.submitted_at == T0 and job.queue_seq == T0.timestamp()
        # Admitted again: attempts counts runs; a plain requeue does not count as a preemption.
        job = transition(s, job, R, at=later(3), node="n2", gpu=0, gpu_slices=[[0, 1]])
        job = transition(s, job, P, at=later(4))
        assert (job.attempts, job.preemptions, job.version) == (2, 1, 4)
        assert s.get(Job, job.id) is not None


def test_requeued_jobs_keep_their_place_in_submission_order(store):
    """Jobs requeued one after another (as recovery does) wait again in the order they were
    submitted, behind a job submitted before them and ahead of one submitted after."""
    with session_scope(store) as s:
        account = make_account(s)
        first = make_job(s, account, at=later(1))  # too big for what was free: it waited
        a, b, c = (make_job(s, account, at=later(2)) for _ in range(3))  # one submission time: then by id
        last = make_job(s, account, at=later(3))
        running = [transition(s, j, R, at=later(4)) for j in (a, b, c)]
        for job in running:
            transition(s, job, P, at=later(5), event="preempted")
        order = s.exec(
            select(Job.id).where(Job.account_id == account.id, Job.state == P).order_by(Job.queue_seq, Job.id)
        ).all()
        seqs = {j.id: j.queue_seq for j in s.exec(select(Job)).all()}
    assert order == [first.id, a.id, b.id, c.id, last.id]
    assert seqs[a.id] == seqs[b.id] == seqs[c.id] == later(2).timestamp()


def test_stale_copy_loses(store):
    with session_scope(store) as s:
        job = make_job(s)
    copy_a, copy_b = job.model_copy(), job.model_copy()
    with session_scope(store) as s:
        transition(s, copy_a, R, at=later(1))
    with pytest.raises(StaleJob), session_scope(store) as s:
        transition(s, copy_b, C, at=later(2))
    with session_scope(store) as s:
        assert s.get(Job, job.id).state is R
        kinds = s.exec(select(JobEvent.kind).where(JobEvent.job_id == job.id)).all()
    assert sorted(kinds) == ["admitted", "submitted"]


def test_unknown_field_or_event_is_refused(store):
    with session_scope(store) as s:
        job = make_job(s)
        with pytest.raises(TypeError):
            transition(s, job, R, at=later(1), version=7)
        with pytest.raises(ValueError):
            transition(s, job, R, at=later(1), event="exploded")


@settings(max_examples=40, deadline=None)
@given(targets=st.lists(st.sampled_from(list(JobState)), max_size=8))
def test_any_sequence_follows_the_machine(store, targets):
    """Whatever is attempted, the stored job only ever moved along ALLOWED,
    its version counts the moves, and each move left exactly one event."""
    with session_scope(store) as s:
        job = make_job(s)
        expected, moves = JobState.PENDING, 0
        for i, to in enumerate(targets):
            try:
                job = transition(s, job, to, at=later(i + 1))
            except InvalidTransition:
                assert to not in ALLOWED[expected]
                continue
            assert to in ALLOWED[expected]
            expected, moves = to, moves + 1
        stored = s.get(Job, job.id)
        n_events = len(s.exec(select(JobEvent.id).where(JobEvent.job_id == job.id)).all())
    assert (stored.state, stored.version, n_events) == (expected, moves, moves + 1)
    assert (stored.finished_at is not None) == expected.is_finished()
