"""Column behaviour on both databases: aware UTC datetimes, JSON, keys, cascades."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import select

from scheduler.store import Account, Job, JobState, Node, Setting, UsageRecord, session_scope
from store_helpers import T0, make_account, make_job

PLUS_5H30 = timezone(timedelta(hours=5, minutes=30))


def test_aware_datetimes_round_trip_as_utc(store):
    local = datetime(2025, 6, 30, 23, 59, 59, 123456, tzinfo=PLUS_5H30)
    with session_scope(store) as s:
        account = make_account(s)
        s.add(UsageRecord(account_id=account.id, slice_seconds=1.5, at=local))
        account_id = account.id
    with session_scope(store) as s:
        record = s.exec(select(UsageRecord).where(UsageRecord.account_id == account_id)).one()
    assert record.at == local
    assert record.at.utcoffset() == timedelta(0) and record.at.tzinfo is not None
    assert record.at.hour == 18 and record.at.microsecond == 123456


def test_datetime_filters_compare_in_utc(store):
    with session_scope(store) as s:
        account = make_account(s)
        for hours in (0, 1, 2):
            s.add(UsageRecord(account_id=account.id, slice_seconds=1.0, at=T0 + timedelta(hours=hours)))
        s.flush()
        since = (T0 + timedelta(minutes=30)).astimezone(PLUS_5H30)
        got = s.exec(select(UsageRecord).where(UsageRecord.account_id == account.id, UsageRecord.at >= since)).all()
    assert len(got) == 2


def test_naive_datetime_is_refused(store):
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), session_scope(store) as s:
        s.add(UsageRecord(account_id=make_account(s).id, slice_seconds=1.0, at=datetime(2025, 1, 1)))
        s.flush()


def test_defaults_and_json_columns(store):
    with session_scope(store) as s:
        job = make_job(s, spec={"steps": 5, "image_size": [224, 224], "note": "ünïcode"})
        job_id = job.id
    with session_scope(store) as s:
        job = s.get(Job, job_id)
        assert job.spec == {"steps": 5, "image_size": [224, 224], "note": "ünïcode"}
        assert (job.gpu_slices, job.result, job.attempts, job.preemptions, job.mode) == ([], None, 0, 0, "train")
        assert job.state is JobState.PENDING and isinstance(job.state, JobState)
        job.result = {"throughput": 123.4}  # JSON columns: assign, never mutate in place
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM job WHERE result IS NULL AND id = :i"), {"i": job_id}).scalar() == 0
    with session_scope(store) as s:
        assert s.get(Job, job_id).result == {"throughput": 123.4}


def test_result_none_is_sql_null(store):
    with session_scope(store) as s:
        job_id = make_job(s).id
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM job WHERE result IS NULL AND id = :i"), {"i": job_id}).scalar() == 1


def test_unique_account_name_and_foreign_keys(store):
    with session_scope(store) as s:
        make_account(s, "dup-name")
    with pytest.raises(sa.exc.IntegrityError), session_scope(store) as s:
        make_account(s, "dup-name")
    with pytest.raises(sa.exc.IntegrityError), session_scope(store) as s:
        s.add(Account(name="orphan", weight=1, parent_id=10**9))
        s.flush()


def test_deleting_an_account_cascades_to_usage_but_not_jobs(store):
    with session_scope(store) as s:
        parent = make_account(s)
        child = make_account(s, parent_id=parent.id)
        s.add(UsageRecord(account_id=child.id, slice_seconds=9.0, at=T0))
        child_id = child.id
    with session_scope(store) as s:
        s.delete(s.get(Account, child_id))
    with session_scope(store) as s:
        assert s.exec(select(UsageRecord).where(UsageRecord.account_id == child_id)).all() == []
        with_job = make_account(s)
        make_job(s, with_job)
        with_job_id = with_job.id
    with pytest.raises(sa.exc.IntegrityError), session_scope(store) as s:
        s.delete(s.get(Account, with_job_id))
        s.flush()


def test_node_and_setting(store):
    with session_scope(store) as s:
        s.add(Node(name="gpu-a", gpu_type="T4", gpus=4, slices_per_gpu=4, updated_at=T0))
        s.add(Setting(key="half_life_days", value="7"))
    with session_scope(store) as s:
        node = s.exec(select(Node).where(Node.name == "gpu-a")).one()
        assert (node.active, node.source, node.updated_at) == (True, "declared", T0)
        assert s.get(Setting, "half_life_days").value == "7"
