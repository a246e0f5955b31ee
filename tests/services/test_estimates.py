"""services.estimates: positions and estimated starts from a constructed database state,
on SQLite and PostgreSQL (the replay itself is tested in tests/quota/test_estimate.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from quota.estimate import Estimate
from scheduler.loop.apply import set_progress
from scheduler.services import accounts, capacity, estimates
from scheduler.services.snapshot import JobRow
from scheduler.store import Job, JobState, session_scope, transition
from scheduler.store.transitions import submit_jobs

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
T = NOW.timestamp()


@pytest.fixture
def engine(db_engine):
    with session_scope(db_engine) as s:
        capacity.set_node(s, node="n1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=NOW)
        accounts.add_account(s, "a", weight=1)
        accounts.add_account(s, "b", weight=1)
    return db_engine


def job(engine, account: str, slices: int, *, seconds=None, time_limit_s=None, running_since=None, gpu_slices=None,
        progress=None) -> int:
    """A hold job (with ``seconds``) or a resnet18 job; RUNNING from ``running_since`` if given."""
    with session_scope(engine) as s:
        acct = accounts.get_account(s, account)
        model, spec = ("hold", {"seconds": seconds}) if seconds is not None else ("resnet18", {})
        (job_id,) = submit_jobs(s, count=1, account_id=acct.id, model=model,
                                framework=None if seconds is not None else "pytorch", mode="train", slices=slices,
                                spec=spec, at=NOW - timedelta(minutes=5), time_limit_s=time_limit_s)
        j = s.get(Job, job_id)
        if running_since is not None:
            j = transition(s, j, JobState.RUNNING, at=running_since, node="n1", gpu=0, gpu_slices=[gpu_slices])
            if progress is not None:
                set_progress(s, j.id, progress)
        return j.id


def test_running_jobs_limits_progress_and_hold_seconds_give_the_starts(engine):
    # r1 holds 100 s from NOW-40: it ends at NOW+60. r2 has a 300 s limit from NOW-10, but its
    # progress says 30 s more as of NOW-5: it ends at NOW+25 (the least bound).
    job(engine, "a", 2, seconds=100, running_since=NOW - timedelta(seconds=40), gpu_slices=[0, 2])
    job(engine, "b", 2, time_limit_s=300, running_since=NOW - timedelta(seconds=10), gpu_slices=[0, 2],
        progress={"step": 10, "steps": 70, "samples_per_second": 500.0, "eta_s": 30.0, "updated_at": T - 5})
    p1 = job(engine, "a", 2, seconds=50)  # runs 50 s once started
    p2 = job(engine, "b", 4, time_limit_s=100)  # the whole GPU
    p3 = job(engine, "b", 2)  # no limit: once started it holds its slices past the horizon
    with session_scope(engine) as s:
        got = estimates.estimated_starts(s, NOW)
    # At NOW+25 r2's slices free: b (holding nothing) goes first, and only p3 fits them. At
    # NOW+60 r1's slices go to a's p1. p2 needs the whole GPU, which p3 never frees.
    assert got == {p3: Estimate(1, T + 25), p1: Estimate(2, T + 60), p2: Estimate(3, None)}
    with session_scope(engine) as s:  # positions stay global; only the caller's jobs come back
        assert estimates.estimated_starts(s, NOW, accounts={"a"}) == {p1: Estimate(2, T + 60)}
        assert estimates.estimated_starts(s, NOW, accounts=set()) == {}


def test_a_previous_attempts_progress_and_a_past_end_are_not_believed(engine):
    # the progress is older than this attempt's start: only the time limit bounds it
    job(engine, "a", 4, time_limit_s=120, running_since=NOW - timedelta(seconds=20), gpu_slices=[0, 4],
        progress={"step": 1, "steps": 2, "samples_per_second": None, "eta_s": 1.0, "updated_at": T - 60})
    p1 = job(engine, "b", 4, seconds=10)
    with session_scope(engine) as s:
        assert estimates.estimated_starts(s, NOW) == {p1: Estimate(1, T + 100)}
    # past its limit and still running (the loop has not stopped it yet): it ends "now"
    with session_scope(engine) as s:
        assert estimates.estimated_starts(s, NOW + timedelta(seconds=500)) == {p1: Estimate(1, T + 500)}


def test_an_unbounded_running_job_leaves_a_position_but_no_start(engine):
    job(engine, "a", 4, running_since=NOW, gpu_slices=[0, 4])
    p1, p2 = job(engine, "b", 2, seconds=5), job(engine, "a", 2, seconds=5)
    with session_scope(engine) as s:
        assert estimates.estimated_starts(s, NOW) == {p1: Estimate(1, None), p2: Estimate(2, None)}


def test_the_expected_run_time_of_a_pending_job():
    row = JobRow
    base = dict(id=1, account_id=1, state=JobState.PENDING, version=0, slices=1, queue_seq=0.0, submitted_at=NOW,
                started_at=None, node=None, gpu_slices_json=None, attempts=0, framework=None, mode="train",
                reason=None, reason_message=None, finished_at=None, failures=0)
    hold = row(**base, model="hold", spec_json='{"seconds": 50}', time_limit_s=None)
    capped = row(**base, model="hold", spec_json='{"seconds": 50}', time_limit_s=20.0)
    model = row(**base, model="vgg16", spec_json="{}", time_limit_s=600.0)
    unknown = row(**base, model="vgg16", spec_json="{}", time_limit_s=None)
    assert [estimates.expected_runtime(r) for r in (hold, capped, model, unknown)] == [50.0, 20.0, 600.0, None]


def test_the_cache_replays_at_most_every_ttl_unless_a_wanted_job_is_missing(engine):
    calls = []
    cache = estimates.EstimateCache(ttl_s=2.0, compute=lambda s, now: calls.append(now) or estimates.replay(s, now))
    p1 = job(engine, "a", 1, seconds=5)
    with session_scope(engine) as s:
        assert cache.get(s, NOW, None, wanted=[p1]) == {p1: Estimate(1, T)}
        assert cache.get(s, NOW + timedelta(seconds=1.5), {"a"}, wanted=[p1]) == {p1: Estimate(1, T)}
        assert cache.get(s, NOW + timedelta(seconds=1.5), {"b"}) == {}
    assert len(calls) == 1
    p2 = job(engine, "b", 1, seconds=5)  # submitted since: not in the kept replay
    with session_scope(engine) as s:
        got = cache.get(s, NOW + timedelta(seconds=1.6), None, wanted=[p1, p2])
    assert set(got) == {p1, p2} and len(calls) == 2
    with session_scope(engine) as s:
        cache.get(s, NOW + timedelta(seconds=3.7), None)  # older than ttl_s
        cache.get(s, NOW, None)  # the clock went back: not trusted either
    assert len(calls) == 4
