"""A fenced attempt holds its slices until it stops, and every slice-second it held is
charged once, on SQLite and PostgreSQL (scheduler.loop.recovery, `Held`).

Each "server" is a scheduling loop (on a FakeExecutor) holding a `Lease` of its own; the
old leader is a live process stopped with SIGSTOP (a paused server), so the new leader's
recovery finds its attempt fenced but perhaps still running. The attempt's own files say
when it started (its start marker), that it runs (its heartbeat) and when it stopped (its
end marker), as `scheduler.runtime.tasks` writes them."""
from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from loop_world import make_world

from scheduler.loop.recovery import Held
from scheduler.runtime import jobfiles
from scheduler.store import JobState
from scheduler.store.lease import Lease

TTL = 15.0



def charged(engine, job_id: int) -> float:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT coalesce(sum(slice_seconds), 0) FROM usage_record WHERE job_id = :j"),
                            {"j": job_id}).scalar()


def wall() -> datetime:
    return datetime.fromtimestamp(time.time(), tz=UTC)


class Failover:
    """A leader (pid `old`) runs a 2-slice job whose task started 40 s ago and charged it up
    to now; then a new leader takes over the lapsed lease and recovers."""

    def __init__(self, tmp_path, engine, old: int):
        self.w = make_world(tmp_path, engine=engine)
        self.root = self.w.executor.results_dir
        self.clock = [wall()]
        self.w.now[0] = wall()
        lease = Lease(engine, ttl_s=TTL, pid=old, now=lambda: self.clock[0])
        lease.try_acquire()
        self.w.restart(lease=lease, usage_period_s=0.0)
        self.job = self.w.submit(seconds=600, slices=2)
        self.w.loop.run_once()
        assert self.w.job(self.job).state == JobState.RUNNING
        self.started = time.time() - 40
        self.w.executor.begin(self.job, self.started)
        marker = jobfiles.started_path(self.root, self.job, 1)
        jobfiles.ensure_dir(marker.parent)
        marker.touch()
        os.utime(marker, (self.started, self.started))
        jobfiles.touch_alive(self.root, self.job, 1)
        self.w.now[0] = wall()
        self.w.loop.run_once()  # the old leader's meter: charged up to now
        self.first_charge = charged(engine, self.job)
        assert self.first_charge == pytest.approx(2 * (self.w.now[0].timestamp() - self.started), rel=1e-6)

    def take_over(self) -> dict:
        self.clock[0] += timedelta(seconds=2 * TTL)
        lease = Lease(self.w.engine, ttl_s=TTL, now=lambda: self.clock[0])
        lease.try_acquire()
        self.w.now[0] = wall()
        self.w.restart(lease=lease, usage_period_s=0.0)
        return self.w.loop.recover()


def test_a_fenced_attempt_holds_its_slices_until_it_stops_and_is_charged_to_its_end(tmp_path, db_engine, paused):
    f = Failover(tmp_path, db_engine, old=paused)
    counts = f.take_over()
    assert counts["held"] == 1 and counts["requeued"] == 0
    assert jobfiles.fenced(f.root, f.job, 1)  # the attempt can see it must stop
    assert jobfiles.started_path(f.root, f.job, 1).exists()  # its start is kept while it is held
    other = f.w.submit(seconds=1, slices=3)
    before = len(f.w.executor.starts)  # the old leader's start of attempt 1
    for _ in range(3):  # its 2 slices stay in use: the 3-slice job does not fit beside it
        jobfiles.touch_alive(f.root, f.job, 1)
        f.w.now[0] = wall()
        f.w.loop.run_once()
        assert f.w.job(f.job).state == JobState.RUNNING and f.w.job(other).state == JobState.PENDING
    assert f.w.executor.starts[before:] == []  # neither started again nor placed beside it

    jobfiles.mark_ended(f.root, f.job, 1, how="fenced", started_at=f.started)  # it stopped itself
    ended_at = jobfiles.read_ended(f.root, f.job, 1)["ended_at"]
    f.w.now[0] = wall()
    f.w.loop.run_once()
    job = f.w.job(f.job)  # queued again (and perhaps admitted again in the same cycle: its slices are free)
    assert (job.state, job.attempts) in ((JobState.PENDING, 1), (JobState.RUNNING, 2))
    assert charged(db_engine, f.job) == pytest.approx(2 * (ended_at - f.started), rel=1e-6)  # once, start to end
    assert not f.w.loop.held
    f.w.loop.run_once()
    f.w.loop.run_once()
    assert [s["job_id"] for s in f.w.executor.starts[before:]][:1] in ([f.job], [other])  # its slices are free
    assert charged(db_engine, f.job) == pytest.approx(2 * (ended_at - f.started), rel=1e-6)


def test_an_attempt_whose_heartbeat_went_stale_is_ended_at_its_last_beat(tmp_path, db_engine, paused):
    f = Failover(tmp_path, db_engine, old=paused)
    beat = time.time() - 3 * jobfiles.ALIVE_STALE_S  # its worker died (no end marker) after this beat
    os.utime(jobfiles.alive_path(f.root, f.job, 1), (beat, beat))
    counts = f.take_over()
    assert counts["held"] == 0 and counts["requeued"] == 1
    assert f.w.job(f.job).state == JobState.PENDING
    assert charged(db_engine, f.job) == pytest.approx(max(f.first_charge, 2 * (beat - f.started)), rel=1e-6)


def test_held_reads_only_files(tmp_path):
    root = str(tmp_path)
    held = Held(root)
    now = time.time()
    assert held.end_of(7, 1, now) == now  # nothing there at all: gone, seen now
    jobfiles.touch_alive(root, 7, 1)
    assert held.end_of(7, 1, time.time()) is None
    jobfiles.mark_ended(root, 7, 1, how="finished", started_at=now - 5)
    assert held.end_of(7, 1, time.time() + 100) == jobfiles.read_ended(root, 7, 1)["ended_at"]


def test_a_dead_leaders_attempts_are_not_held_and_are_charged_to_their_last_beat(tmp_path, db_engine):
    proc = subprocess.Popen(["true"])
    proc.wait()  # a server killed with kill -9: its Ray is ended before the next one starts
    f = Failover(tmp_path, db_engine, old=proc.pid)
    beat = os.stat(jobfiles.alive_path(f.root, f.job, 1)).st_mtime  # fresh: its worker was killed just now
    counts = f.take_over()
    assert counts["held"] == 0 and counts["requeued"] == 1
    assert charged(db_engine, f.job) == pytest.approx(max(f.first_charge, 2 * (beat - f.started)), rel=1e-6)
