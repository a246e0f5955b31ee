"""Several writers at once: SQLite processes never see "database is locked",
and of two workers racing on one job exactly one wins."""
from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter

import pytest
from sqlmodel import func, select

from scheduler.store import Job, JobEvent, JobState, StaleJob, session_scope, transition
from store_helpers import later, make_account, make_job

WRITER = """
import sys
from datetime import UTC, datetime
from sqlmodel import select
from scheduler.store import Account, make_engine, session_scope
from scheduler.store.transitions import submit_jobs

url, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
engine = make_engine(url)
for i in range(count):
    with session_scope(engine) as s:  # read, then write: the case BEGIN IMMEDIATE fixes
        account = s.exec(select(Account).where(Account.name == "shared")).one()
        submit_jobs(s, count=1, account_id=account.id, model="m", framework=None, mode="train", slices=1,
                    spec={"worker": worker, "i": i}, at=datetime.now(UTC))
engine.dispose()
"""


def test_sqlite_multiprocess_writers(sqlite_url):
    from scheduler.store import init_db, make_engine

    engine = make_engine(sqlite_url)
    init_db(engine)
    with session_scope(engine) as s:
        make_account(s, "shared")
    workers, each = 4, 50
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, sqlite_url, str(w), str(each)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in range(workers)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, errors
    assert not any("locked" in e for e in errors)
    with session_scope(engine) as s:
        specs = [(j.spec["worker"], j.spec["i"]) for j in s.exec(select(Job)).all()]
        events = s.exec(select(func.count()).select_from(JobEvent)).one()
    assert Counter(specs) == Counter((w, i) for w in range(workers) for i in range(each))
    assert events == workers * each
    engine.dispose()


@pytest.mark.parametrize("targets", [(JobState.RUNNING, JobState.RUNNING), (JobState.RUNNING, JobState.CANCELLED)])
def test_two_workers_race_on_one_job(db_engine, targets):
    with session_scope(db_engine) as s:
        job = make_job(s, make_account(s))
    barrier = threading.Barrier(len(targets))
    outcomes: list[str] = []

    def worker(to: JobState, copy: Job) -> None:
        barrier.wait()
        try:
            with session_scope(db_engine) as s:
                transition(s, copy, to, at=later(1))
            outcomes.append("won")
        except StaleJob:
            outcomes.append("stale")

    threads = [threading.Thread(target=worker, args=(to, job.model_copy())) for to in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["stale", "won"]
    with session_scope(db_engine) as s:
        final = s.get(Job, job.id)
        kinds = s.exec(select(JobEvent.kind).where(JobEvent.job_id == job.id)).all()
    assert final.version == 1 and final.state in targets
    assert len(kinds) == 2  # "submitted" plus the winner's event only
