"""The job row's one owner (scheduler/store/jobrow.py), on SQLite and PostgreSQL: its fast
reads decode each field by name as SQLAlchemy would, and its inserts store what
SQLAlchemy's own INSERT stores."""
from __future__ import annotations

from datetime import UTC, timedelta

import pytest

from scheduler.store import Job, JobState, session_scope
from scheduler.store.jobrow import FIELDS, JOBS, JobRow, active_jobs, column_of, insert_jobs, json_value, new_job, \
    raw_json, running_jobs
from scheduler.store.transitions import transition
from store_helpers import T0, later, make_account, make_job

SELECT_ALL_BUT_ID = "SELECT {cols} FROM job WHERE id = {mark}"


def _distinct_jobs(session):
    """A running job with every field set to something of its own, a pending one, a finished one."""
    account = make_account(session)
    running = make_job(session, account, model="vgg16", framework="keras", mode="infer", slices=2,
                       spec={"steps": 7, "batch_size": 3})
    running = transition(session, running, JobState.RUNNING, at=later(1), message="on n1", node="n1", gpu=3,
                         gpu_slices=[[3, 0], [3, 1]], time_limit_s=90.5)
    pending = make_job(session, account, at=later(2), model="hold", framework=None, spec={"seconds": 5})
    done = make_job(session, account, at=later(3))
    done = transition(session, done, JobState.RUNNING, at=later(4), node="n2", gpu=0, gpu_slices=[[0, 0]])
    transition(session, done, JobState.FAILED, at=later(5), message="boom", error="boom")
    return running.id, pending.id, done.id


def test_each_field_is_read_from_the_column_of_its_name(store):
    with session_scope(store) as s:
        ids = _distinct_jobs(s)
        rows = {r.id: r for r in active_jobs(s.connection(), ids)}
        assert set(rows) == set(ids)
        for job_id in ids:
            job, row = s.get(Job, job_id), rows[job_id]
            for field in FIELDS:
                want = getattr(job, column_of(field).name)
                got = getattr(row, field)
                if field.endswith("_json"):
                    got = json_value(got, None)
                assert got == want, (job_id, field)
            assert isinstance(row.state, JobState)
            assert row.submitted_at.tzinfo is not None and row.submitted_at.utcoffset() == timedelta(0)
        running = rows[ids[0]]
        assert running.gpu_slices == [[3, 0], [3, 1]] and running.spec == {"steps": 7, "batch_size": 3}
        assert running.started_at == later(1) and running.time_limit_s == 90.5 and running.attempts == 1
        assert rows[ids[2]].finished_at == later(5) and rows[ids[2]].state == JobState.FAILED


def test_the_fast_reads_equal_sqlalchemys_own_by_name(store):
    from scheduler.store import jobrow

    with session_scope(store) as s:
        ids = _distinct_jobs(s)
        conn = s.connection()
        want = sorted(JobRow(**r._mapping) for r in conn.execute(jobrow.SELECT.where(JOBS.c.id.in_(ids))))
        assert len(want) == 3
        assert sorted(active_jobs(conn, ids)) == want
        got = {r.id: r for r in active_jobs(conn)}
        assert [got[i] for i in ids[:2]] == [w for w in want if w.id in ids[:2]] and ids[2] not in got
        assert [r for r in running_jobs(conn) if r.id in ids] == [w for w in want if w.id == ids[0]]


def test_ids_past_sqlites_parameter_limit_are_read_in_chunks(store):
    with session_scope(store) as s:
        account = make_account(s)
        made = insert_jobs(s.connection(), [new_job(account_id=account.id, model="hold", framework=None,
                                                    mode="train", slices=1, spec={"seconds": 1}, at=T0)
                                            for _ in range(1901)])
        rows = active_jobs(s.connection(), made + [10**9])  # one that does not exist
        assert sorted(r.id for r in rows) == sorted(made)


def test_insert_jobs_stores_what_sqlalchemys_insert_stores(store):
    at = T0.astimezone(UTC) + timedelta(microseconds=123457)
    with session_scope(store) as s:
        account = make_account(s)
        row = new_job(account_id=account.id, model="resnet18", framework="torch", mode="train", slices=3,
                      spec={"steps": 2, "nested": {"a": [1, 2]}}, at=at, time_limit_s=12.0)
        conn = s.connection()
        (fast,) = insert_jobs(conn, [dict(row)])
        (plain,) = [r[0] for r in conn.execute(JOBS.insert().returning(JOBS.c.id), [dict(row)])]
        mark = "?" if conn.dialect.name == "sqlite" else "%s"
        cols = ", ".join(c.name for c in JOBS.columns if c.name != "id")
        stored = [conn.exec_driver_sql(SELECT_ALL_BUT_ID.format(cols=cols, mark=mark), (i,)).one() for i in (fast, plain)]
        assert stored[0] == stored[1]  # the driver's own values, column by column
        events = conn.exec_driver_sql(f"SELECT kind, message, at FROM job_event WHERE job_id = {mark}", (fast,)).all()
        assert len(events) == 1 and events[0][:2] == ("submitted", None)
        job = s.get(Job, fast)
        assert job.submitted_at == at and job.state == JobState.PENDING and job.queue_seq == at.timestamp()
        assert job.spec == {"steps": 2, "nested": {"a": [1, 2]}} and job.gpu_slices == [] and job.version == 0


def test_insert_jobs_returns_ids_in_the_rows_order(store):
    with session_scope(store) as s:
        accounts = [make_account(s) for _ in range(3)]
        rows = [new_job(account_id=a.id, model="hold", framework=None, mode="train", slices=k + 1,
                        spec={"seconds": k}, at=later(k)) for k, a in enumerate(accounts)]
        ids = insert_jobs(s.connection(), rows)
        assert [s.get(Job, i).account_id for i in ids] == [a.id for a in accounts]
        assert [s.get(Job, i).slices for i in ids] == [1, 2, 3]


def test_a_new_job_needs_a_slice():
    from scheduler.store import StoreError

    with pytest.raises(StoreError, match="at least one slice"):
        new_job(account_id=1, model="hold", framework=None, mode="train", slices=0, spec={}, at=T0)


def test_no_module_uses_sqlalchemys_private_processors():
    """Encoding and decoding go through the types' public processors (jobrow, bulk)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "scheduler"
    private = ("_bind_processors", "_result_processors", "_cached_bind_processor", "_cached_result_processor")
    hits = [f"{p.relative_to(root)}: {name}" for p in root.rglob("*.py") for name in private
            if name in p.read_text()]
    assert hits == []


def test_raw_json_is_what_a_read_gives(store):
    with session_scope(store) as s:
        running, pending, _done = _distinct_jobs(s)
        rows = {r.id: r for r in active_jobs(s.connection(), [running, pending])}
        dialect = s.connection().dialect
        assert raw_json([[3, 0], [3, 1]], dialect) == rows[running].gpu_slices_json
        assert raw_json({"seconds": 5}, dialect) == rows[pending].spec_json
