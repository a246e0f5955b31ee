"""No crash loop: a job whose task was running at two unclean scheduler stops in a row is
not started a third time (recovery ends it FAILED, saying so); a clean stop (drain), a
lapsed lease whose holder still lives and any other end of a started attempt cost nothing
or start the count again. An admission whose task never started counts as nothing: no
retry, the count left as it was, its place kept. Requeued jobs keep their submission
order.

The rules run with real leases on SQLite and PostgreSQL: each "server" is a scheduling
loop (on a FakeExecutor) holding a `Lease` of its own, and takes over once the last one's
lease lapsed (the leases' own clock is moved) or was released. Its host and pid say how
it stops: a pid that exited is a dead server (kill -9), a stopped `sleep` a paused one.
The last test kills a real `fairgpu up` twice while it runs a job, and starts it again."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from loop_world import make_world
from service_helpers import Up, admin_client, institution, wait_for
from sqlmodel import select

from scheduler.runtime.jobfiles import started_path
from scheduler.loop.recovery import NEVER_STARTED, UNCLEAN_STOP_LIMIT, LastStop, crash_loop_message, last_stop
from scheduler.services.snapshot import SnapshotLoader
from scheduler.store import Job, JobEvent, JobState, UsageRecord, make_engine, session_scope, utcnow
from scheduler.store.lease import Holder, Lease, process_started_at

TTL = 15.0
HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has exited: a server killed with kill -9."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid



class Servers:
    """Servers on one database, one after another, each a loop holding a lease of its own."""

    def __init__(self, tmp_path: Path, engine) -> None:
        self.w = make_world(tmp_path, engine=engine)
        self.clock = [utcnow()]  # the leases' wall clock (the loop's job clock is the world's)
        self.lease: Lease | None = None

    def start(self, *, pid: int, host: str = HOST) -> dict[str, int]:
        """A new server takes the lease once the last one lapsed (or was released): its
        recovery's counts."""
        self.clock[0] += timedelta(seconds=2 * TTL)
        self.lease = Lease(self.w.engine, ttl_s=TTL, host=host, pid=pid, now=lambda: self.clock[0])
        self.lease.try_acquire()
        self.w.restart(lease=self.lease)
        return self.w.loop.recover()

    def run(self, *job_ids: int, started: bool = True) -> None:
        """A cycle admits the jobs; with `started`, their tasks start (their start markers)."""
        self.w.loop.run_once()
        for job_id in job_ids:
            job = self.w.job(job_id)
            assert job.state == JobState.RUNNING, (job_id, job.state)
            if started:
                marker = Path(started_path(self.w.executor.results_dir, job_id, job.attempts))
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()

    def drain(self) -> int:
        """A clean stop: the drain, then the lease released."""
        n = self.w.loop.drain()
        self.lease.release()
        return n

    def events(self, job_id: int) -> list[tuple[str, str | None]]:
        with session_scope(self.w.engine, readonly=True) as s:
            rows = s.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
            return [(e.kind, e.message) for e in rows]


@pytest.fixture
def servers(tmp_path, db_engine):
    return Servers(tmp_path, db_engine)


def test_a_job_running_at_two_unclean_stops_in_a_row_ends_failed_and_is_not_started_again(servers):
    c = servers
    assert c.start(pid=dead_pid()) == {"finished": 0, "requeued": 0, "failed": 0, "held": 0, "markers_removed": 0}
    culprit, admitted = c.w.submit(seconds=600), c.w.submit(seconds=600)
    c.run(culprit)
    c.run(admitted, started=False)  # admitted, but its task never started: it cannot have stopped anything

    assert c.start(pid=dead_pid())["requeued"] == 2  # the last server died: unclean
    job = c.w.job(culprit)
    assert (job.state, job.unclean_stops) == (JobState.PENDING, 1)
    assert c.events(culprit)[-1] == ("requeued", "the scheduler restarted after an unclean stop while it ran "
                                     f"(1 in a row; at {UNCLEAN_STOP_LIMIT} it is not started again); queued again")
    assert c.w.job(admitted).unclean_stops == 0

    c.run(culprit)  # the restarted server runs it again, and dies again
    c.run(admitted, started=False)
    counts = c.start(pid=dead_pid())
    assert counts == {"finished": 0, "requeued": 1, "failed": 1, "held": 0, "markers_removed": 1}
    job = c.w.job(culprit)
    assert (job.state, job.attempts, job.unclean_stops) == (JobState.FAILED, 2, 2)
    assert job.error == job.reason_message == crash_loop_message(2)
    assert "running at 2 unclean scheduler stops in a row; not started again" in job.error
    assert c.events(culprit)[-1] == ("failed", crash_loop_message(2))
    assert (c.w.job(admitted).state, c.w.job(admitted).unclean_stops) == (JobState.PENDING, 0)

    starts = len(c.w.executor.starts)
    for _ in range(3):
        c.w.loop.run_once()
    assert c.w.job(culprit).state == JobState.FAILED and c.w.job(culprit).attempts == 2
    assert culprit not in {s["job_id"] for s in c.w.executor.starts[starts:]}
    assert c.w.job(admitted).state == JobState.RUNNING  # the other one runs on


def test_one_unclean_stop_then_any_other_end_starts_the_count_again(servers):
    c = servers
    c.start(pid=dead_pid())
    done, lost = c.w.submit(), c.w.submit()
    c.run(done, lost)
    c.start(pid=dead_pid())
    assert c.w.job(done).unclean_stops == c.w.job(lost).unclean_stops == 1

    c.run(done, lost)
    c.w.executor.finish(done)  # a normal end
    c.w.executor.begin(lost, c.w.now[0].timestamp())
    c.w.executor.finish(lost, ok=False, infrastructure=True, error="WorkerCrashedError")  # its worker died
    c.w.loop.run_once()  # settles both (and may admit `lost` again at once)
    assert (c.w.job(done).state, c.w.job(done).unclean_stops) == (JobState.SUCCEEDED, 0)
    job = c.w.job(lost)
    assert (job.failures, job.unclean_stops) == (1, 0)
    assert ("requeued", "attempt 2 lost its worker or node: WorkerCrashedError") in c.events(lost)

    c.run(lost)
    assert c.start(pid=dead_pid())["failed"] == 0  # one unclean stop in a row again, not two
    assert (c.w.job(lost).state, c.w.job(lost).unclean_stops) == (JobState.PENDING, 1)


def test_a_clean_drain_and_a_lapsed_lease_cost_nothing(servers, paused):
    c = servers
    c.start(pid=dead_pid())
    job_id = c.w.submit()
    c.run(job_id)
    c.start(pid=dead_pid())
    assert c.w.job(job_id).unclean_stops == 1

    c.run(job_id)
    assert c.drain() == 1  # a clean stop: the drain queues it again and starts its count again
    assert c.w.job(job_id).unclean_stops == 0
    assert c.start(pid=dead_pid()) == {"finished": 0, "requeued": 0, "failed": 0, "held": 0, "markers_removed": 1}
    assert c.lease.previous.released and last_stop(c.lease) is LastStop.CLEAN

    c.run(job_id)
    c.start(pid=paused)  # unclean (the last server died); the new one is the process that will pause
    assert c.w.job(job_id).unclean_stops == 1
    c.run(job_id)
    assert c.start(pid=dead_pid())["failed"] == 0  # its lease lapsed, but it lives: paused, not dead
    assert last_stop(c.lease) is LastStop.LAPSED
    job = c.w.job(job_id)
    assert (job.state, job.unclean_stops) == (JobState.PENDING, 0)
    assert c.events(job_id)[-1] == ("requeued", "the scheduler restarted while it ran; queued again")

    c.run(job_id)
    c.start(pid=dead_pid())
    assert (c.w.job(job_id).state, c.w.job(job_id).unclean_stops) == (JobState.PENDING, 1)


def test_requeued_jobs_keep_their_submission_order(servers):
    """Recovery requeues several running jobs at once: they wait again in the order they were
    submitted (then id), ahead of the jobs submitted after them, in the database and in the
    policy's queue. (Each used to go to the head in turn, so they came back reversed.)"""
    c = servers
    c.start(pid=dead_pid())
    ids = []
    for _ in range(8):  # the node has 4 slices: 4 run, 4 wait
        ids.append(c.w.submit(seconds=600))
        c.w.tick(1.0)
    array = [c.w.submit(seconds=600) for _ in range(2)]  # one submission time: then by id
    c.run(*ids[:4], started=False)
    for job_id in ids[:3]:  # three had started, one was only admitted
        marker = Path(started_path(c.w.executor.results_dir, job_id, 1))
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    assert c.start(pid=dead_pid())["requeued"] == 4

    with session_scope(c.w.engine, readonly=True) as s:
        jobs = s.exec(select(Job).where(Job.state == JobState.PENDING).order_by(Job.queue_seq, Job.id)).all()
        assert [j.id for j in jobs] == ids + array
        assert all(j.queue_seq == j.submitted_at.timestamp() for j in jobs)
        queue = SnapshotLoader().sync(s).state.queues["lab"]
    assert [r.id for r in queue] == ids + array
    c.w.loop.run_once()
    assert {j: c.w.job(j).state for j in ids[:5]} == {**dict.fromkeys(ids[:4], JobState.RUNNING),
                                                     ids[4]: JobState.PENDING}


def test_an_admission_whose_task_never_started_counts_as_nothing(servers):
    """Not an attempt's failure, not a retry, not an unclean stop, and not a break in the run
    of unclean stops: the job keeps its place and its count, and nothing is charged."""
    c = servers
    c.start(pid=dead_pid())
    job_id = c.w.submit(seconds=600)
    c.run(job_id)
    c.start(pid=dead_pid())
    assert c.w.job(job_id).unclean_stops == 1

    for _ in range(3):  # restarts faster than Ray starts tasks
        c.w.tick(5.0)
        c.run(job_id, started=False)
        assert c.start(pid=dead_pid())["requeued"] == 1
        job = c.w.job(job_id)
        assert (job.state, job.failures, job.unclean_stops) == (JobState.PENDING, 0, 1)
        assert job.queue_seq == job.submitted_at.timestamp()
        assert c.events(job_id)[-1] == ("requeued", NEVER_STARTED)
    with session_scope(c.w.engine, readonly=True) as s:
        assert s.exec(select(UsageRecord).where(UsageRecord.job_id == job_id)).all() == []

    c.run(job_id)  # it runs, and the server dies again: the second unclean stop in a row
    assert c.start(pid=dead_pid())["failed"] == 1
    assert (c.w.job(job_id).state, c.w.job(job_id).unclean_stops) == (JobState.FAILED, 2)


def test_an_unclean_stop_on_another_host_counts(servers):
    """Nothing here can see a process on another host: its stop counts as unclean (else two
    servers on two hosts could crash-loop a job between them for ever)."""
    c = servers
    c.start(pid=os.getpid(), host="gpu-box-2")  # a live pid here, but the holder ran elsewhere
    job_id = c.w.submit()
    c.run(job_id)
    c.start(pid=dead_pid())
    assert last_stop(c.lease) is LastStop.UNCLEAN
    assert c.w.job(job_id).unclean_stops == 1


def test_how_the_last_server_stopped():
    now = utcnow()
    me = process_started_at(os.getpid())
    assert me is not None and me <= now.timestamp()

    def holder(pid: int, host: str = HOST, since: datetime = now, released: bool = False) -> Holder:
        return Holder(host, pid, 1, since, since + timedelta(seconds=TTL), released=released)

    def stop(previous: Holder | None) -> LastStop:
        return last_stop(SimpleNamespace(previous=previous, host=HOST))

    assert stop(None) is LastStop.NONE
    assert stop(holder(dead_pid(), released=True)) is LastStop.CLEAN
    assert stop(holder(os.getpid())) is LastStop.LAPSED  # it still runs here
    assert stop(holder(dead_pid())) is LastStop.UNCLEAN
    assert stop(holder(os.getpid(), "gpu-box-2")) is LastStop.UNCLEAN  # not seen from here
    # the pid runs, but a process younger than the lease: reused (a restarted container's pid 1)
    assert stop(holder(os.getpid(), since=datetime.fromtimestamp(me - 60, UTC))) is LastStop.UNCLEAN
    assert last_stop(None) is LastStop.UNCLEAN  # no lease to ask


# -- a real `fairgpu up`, killed twice while its job runs ---------------------------------
def _crash(up: Up) -> None:
    os.kill(up.pid, signal.SIGKILL)  # the server only: its Ray is orphaned, as in a real crash
    up.proc.wait(30)


@pytest.mark.slow
def test_fairgpu_up_killed_twice_while_a_job_runs_does_not_run_it_a_third_time(tmp_path):
    db = f"sqlite:///{tmp_path / 'fg.db'}"
    ups = [Up(db, tmp_path, "--lease-ttl", "3")]
    try:
        base = ups[0].wait_up()
        user = institution(admin_client(base, tmp_path), "lab")
        job_id = user.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 600}).json()["id"]

        def running(url: str, attempt: int):
            job = user.get(f"{url}/v1/jobs/{job_id}").json()
            marker = started_path(tmp_path / "results", job_id, attempt)
            return job if job["state"] == "RUNNING" and job["attempts"] == attempt and marker.exists() else None

        for attempt in (1, 2):  # its task runs; the server dies (as if the job had killed it)
            wait_for(lambda: running(base, attempt), timeout=90, what=f"attempt {attempt} to run",
                     show=lambda: user.get(f"{base}/v1/jobs/{job_id}").json())
            _crash(ups[-1])
            ups.append(Up(db, tmp_path, "--lease-ttl", "3"))
            base = ups[-1].wait_up()
            if attempt == 1:
                ups[-1].wait_line(r"recovered: 0 job\(s\) had finished, 1 queued again$", timeout=5)
        ups[-1].wait_line(r"recovered: 0 job\(s\) had finished, 0 queued again, 1 failed \(running at 2 unclean "
                          r"scheduler stops in a row: not started again\)", timeout=5)
        job = user.get(f"{base}/v1/jobs/{job_id}").json()
        assert (job["state"], job["attempts"]) == ("FAILED", 2), job
        assert job["reason_message"] == job["error"] == crash_loop_message(2), job
        assert job["reason"].startswith("running at 2 unclean scheduler stops in a row; not started again"), job
        deadline = time.monotonic() + 3  # a few of its cycles (--period 1 s): it is not started a third time
        while time.monotonic() < deadline:
            assert user.get(f"{base}/v1/jobs/{job_id}").json()["attempts"] == 2
            time.sleep(0.5)
    finally:
        for up in ups:
            up.kill()
    engine = make_engine(db)
    with session_scope(engine, readonly=True) as s:
        kinds = [e.kind for e in s.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))]
        assert s.get(Job, job_id).unclean_stops == 2
    engine.dispose()
    assert kinds.count("admitted") == 2 and kinds[-1] == "failed", kinds
