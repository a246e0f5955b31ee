"""The loop's batched writes (transition_many via apply.admit_many / finish_ok_many) keep
the guarantees of transition(): guarded by version, one event per change, stale jobs skipped."""
from __future__ import annotations

from datetime import timedelta

from scheduler.loop import apply
from scheduler.services import jobs
from scheduler.services.snapshot import active_jobs
from scheduler.store import JobState, session_scope, transition

from api_helpers import T0

HOLD = dict(model="hold", framework=None, mode="train", slices=1, spec={"seconds": 0})


def _submit(seeded, n):
    with session_scope(seeded.engine) as s:
        return jobs.submit_array(s, count=n, account="uni-a/nlp", at=T0, **HOLD)


def _rows(seeded, ids):
    with session_scope(seeded.engine) as s:
        return {r.id: r for r in active_jobs(s, ids)}


def _kinds(seeded, job_id):
    with session_scope(seeded.engine) as s:
        return [e.kind for e in jobs.job_events(s, job_id)]


def test_admit_many_skips_a_job_cancelled_since_it_was_read(seeded):
    ids = _submit(seeded, 4)
    read = _rows(seeded, ids)  # the loop's copies
    with session_scope(seeded.engine) as s:  # meanwhile the API cancels one
        jobs.cancel(s, ids[1], None, T0)
    node = "n1"
    with session_scope(seeded.engine) as s:
        admitted = apply.admit_many(s, [(read[i], node, [(0, 1)]) for i in ids], at=T0 + timedelta(seconds=1))
    assert admitted == {ids[0], ids[2], ids[3]}
    after = _rows(seeded, ids)
    assert after[ids[1]].state == JobState.CANCELLED and _kinds(seeded, ids[1]) == ["submitted", "cancelled"]
    for i in admitted:
        row = after[i]
        assert row.state == JobState.RUNNING and row.version == read[i].version + 1 and row.attempts == 1
        assert row.node == node and row.gpu_slices == [[0, 1]] and row.started_at == T0 + timedelta(seconds=1)
        assert _kinds(seeded, i) == ["submitted", "admitted"]


def test_finish_ok_many_records_results_and_start_events_once(seeded):
    ids = _submit(seeded, 3)
    with session_scope(seeded.engine) as s:
        apply.admit_many(s, [(r, "n1", [(0, 1)]) for r in _rows(seeded, ids).values()], at=T0)
    running = _rows(seeded, ids)
    with session_scope(seeded.engine) as s:  # one finished through another path first
        transition(s, running[ids[0]], JobState.FAILED, at=T0, error="boom")
    t = T0.timestamp()
    result = {"task_started_at": t + 1, "task_finished_at": t + 2, "ray_start_delay_s": 0.5}
    with session_scope(seeded.engine) as s:
        done = apply.finish_ok_many(s, [(running[i], T0 + timedelta(seconds=2), result) for i in ids])
    assert done == {ids[1], ids[2]}
    with session_scope(seeded.engine) as s:
        for i in ids[1:]:
            job = jobs.get_job(s, i, None)
            assert job.state == JobState.SUCCEEDED and job.result == result and job.error is None
            assert job.finished_at == T0 + timedelta(seconds=2)
        assert jobs.get_job(s, ids[0], None).state == JobState.FAILED
    assert _kinds(seeded, ids[1]) == ["submitted", "admitted", "started", "finished"]
    assert _kinds(seeded, ids[0]) == ["submitted", "admitted", "failed"]


def test_fresh_batches_need_no_savepoint_and_a_miss_undoes_the_transaction(seeded):
    """`fresh=True`: the versions were read in this transaction. On SQLite (write lock held
    from BEGIN IMMEDIATE) a miss cannot happen, so if a caller lies the whole transaction is
    refused; on PostgreSQL a stale job is skipped as before."""
    import pytest

    from scheduler.store.transitions import StaleBatch

    ids = _submit(seeded, 3)
    read = _rows(seeded, ids)
    with session_scope(seeded.engine) as s:  # read and admitted in one transaction: all go in
        fresh = {r.id: r for r in active_jobs(s, ids[:2])}
        assert apply.admit_many(s, [(fresh[i], "n1", [(0, 1)]) for i in ids[:2]], at=T0, fresh=True) == set(ids[:2])
    assert _kinds(seeded, ids[0]) == ["submitted", "admitted"]
    with session_scope(seeded.engine) as s:  # ids[2] is cancelled after `read` was taken
        jobs.cancel(s, ids[2], None, T0)
    stale = [(read[ids[2]], "n1", [(0, 1)]), (read[ids[2]], "n1", [(0, 2)])]
    if seeded.engine.dialect.name == "sqlite":
        with pytest.raises(StaleBatch):
            with session_scope(seeded.engine) as s:
                apply.admit_many(s, stale, at=T0, fresh=True)
    else:
        with session_scope(seeded.engine) as s:
            assert apply.admit_many(s, stale, at=T0, fresh=True) == set()
    assert _rows(seeded, [ids[2]])[ids[2]].state == JobState.CANCELLED
    assert _kinds(seeded, ids[2]) == ["submitted", "cancelled"]
