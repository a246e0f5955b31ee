"""`fairgpu admin job cancel ID --db URL`, straight on the database (SQLite and PostgreSQL):
with the server down it cancels a waiting or running job through the guarded transition
(one event), and the next server's recovery leaves it cancelled; a final or unknown job
is refused with one line and exit 1, writing nothing; with a server running, that
server's loop stops the attempt in Ray, as after the API's cancel."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from loop_world import make_world
from sqlmodel import select

from scheduler.loop import apply, recovery
from scheduler.cli import main
from scheduler.services.accounts import add_account
from scheduler.services.capacity import set_node
from scheduler.services.jobs import submit_array
from scheduler.services.jobs_admin import CANCELLED_BY_ADMIN
from scheduler.store import Job, JobEvent, JobState, session_scope, transition, utcnow
from scheduler.store.lease import Lease


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def cancel(url: str, job_id, expect: int):
    result = CliRunner().invoke(main, ["admin", "job", "cancel", str(job_id), "--db", url])
    assert result.exit_code == expect, result.output
    assert result.stdout == "", result.stdout  # messages go to stderr
    return result.stderr


def events(engine, job_id: int) -> list[tuple[str, str | None]]:
    with session_scope(engine, readonly=True) as s:
        return [(e.kind, e.message) for e in s.exec(select(JobEvent).where(JobEvent.job_id == job_id)
                                                    .order_by(JobEvent.id))]


def state(engine, job_id: int) -> tuple[JobState, int]:
    with session_scope(engine, readonly=True) as s:
        job = s.get(Job, job_id)
        return job.state, job.version


@pytest.fixture
def jobs(db_engine):
    """A waiting, a running and a finished job, and the lease of a server killed with kill -9
    (not lapsed yet: its process is gone)."""
    at = utcnow()
    with session_scope(db_engine) as s:
        set_node(s, node="n1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=at)
        add_account(s, "lab", weight=1.0)
        ids = submit_array(s, count=3, account="lab", model="hold", framework=None, mode="train", slices=1,
                           spec={"seconds": 60}, at=at)
    with session_scope(db_engine) as s:
        for job_id in ids[1:]:
            transition(s, s.get(Job, job_id), JobState.RUNNING, at=at, node="n1", gpu=0, gpu_slices=[[0, 1]])
        transition(s, s.get(Job, ids[2]), JobState.SUCCEEDED, at=at, result={"held_s": 60})
    Lease(db_engine, pid=dead_pid()).try_acquire()
    return dict(zip(("pending", "running", "finished"), ids))


def test_cancel_with_the_server_down(db_url, db_engine, jobs, tmp_path):
    pending, running, finished = jobs["pending"], jobs["running"], jobs["finished"]
    assert cancel(db_url, pending, 0) == f"cancelled job {pending} (was PENDING)\n"
    assert cancel(db_url, running, 0) == (f"cancelled job {running} (was RUNNING): no server is running, so its "
                                          "attempt ended with the last one; the next server will not start it\n")
    for job_id in (pending, running):
        assert state(db_engine, job_id)[0] == JobState.CANCELLED
        assert events(db_engine, job_id)[-1] == ("cancelled", CANCELLED_BY_ADMIN)

    refused = {running: f"Error: job {running} already finished (CANCELLED); nothing to cancel\n",
               finished: f"Error: job {finished} already finished (SUCCEEDED); nothing to cancel\n",
               999: "Error: no job 999\n"}
    before = {j: (state(db_engine, j), events(db_engine, j)) for j in jobs.values()}
    for job_id, message in refused.items():
        assert cancel(db_url, job_id, 1) == message
    assert "Error: job_id must be" in cancel(db_url, 0, 1)
    assert {j: (state(db_engine, j), events(db_engine, j)) for j in jobs.values()} == before  # nothing written

    # the next server recovers RUNNING jobs only: the cancelled one stays cancelled
    scope = lambda: session_scope(db_engine)  # noqa: E731
    counts = recovery.recover(scope, str(tmp_path / "results"), apply.UsageMeter(), now=utcnow(), retry_limit=3)
    assert counts == {"finished": 0, "requeued": 0, "failed": 0, "held": 0, "markers_removed": 0}
    assert state(db_engine, running)[0] == JobState.CANCELLED


def test_cancel_is_one_line_from_a_real_process(db_url, jobs):
    def run(job_id):
        return subprocess.run([sys.executable, "-m", "scheduler.cli", "admin", "job", "cancel", str(job_id),
                               "--db", db_url], capture_output=True, text=True, timeout=60)

    done = run(jobs["running"])
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr.startswith(f"cancelled job {jobs['running']} (was RUNNING): no server is running")
    again = run(jobs["running"])
    assert (again.returncode, again.stdout, again.stderr) == (
        1, "", f"Error: job {jobs['running']} already finished (CANCELLED); nothing to cancel\n")


def test_cancel_while_a_server_runs_ends_its_attempt(db_url, db_engine, tmp_path):
    """Not fenced, as the API's cancel is not: the running server's loop reads the event and
    stops the attempt in Ray."""
    w = make_world(tmp_path, engine=db_engine)
    lease = Lease(db_engine)  # this process: a live server
    lease.try_acquire()
    w.restart(lease=lease)
    job_id = w.submit(seconds=600)
    w.loop.run_once()
    w.executor.begin(job_id, w.now[0].timestamp())
    assert w.executor.tracked() == {job_id: 1}
    said = cancel(db_url, job_id, 0)
    assert re.fullmatch(rf"cancelled job {job_id} \(was RUNNING\): the server at {re.escape(lease.host)} pid "
                        rf"{lease.pid} since .* UTC stops its attempt\n", said), said
    w.tick(1)
    w.loop.run_once()
    assert w.executor.cancelled == [job_id] and w.executor.tracked() == {}
    assert w.job(job_id).state == JobState.CANCELLED
    lease.release()
