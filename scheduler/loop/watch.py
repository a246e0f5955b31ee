"""The loop's watch on running attempts: reconcile them with the rows, time limits,
progress files copied into the rows, and checkpoints before a preemption or a drain.

`AttemptWatch` is a collaborator of scheduler.loop.coordinator.SchedulingLoop: it owns
its state (the progress round, the jobs whose node was gone) and is handed what it needs
(the executor's view of running attempts, the usage meter, the loop's `EndAttempt`); the
loop calls it from its admit phase, inside the cycle's write transaction.

Invariants:
- Nothing here calls Ray inside a transaction: `checkpoint` runs before the loop's
  transactions (files only); the others write through the session they are given and
  only read the executor's memory.
- A time limit counts from the attempt's own task start, and ends the attempt TIMEOUT
  with reason TimeLimit through the loop's `EndAttempt` (`apply.end_attempt`, a status
  change with its version guard); only running jobs with a limit are looked at
  (`SnapshotLoader.timed`, handed in).
- Progress is not a status change: copied without a version bump, a bounded number of
  progress files looked at per cycle. What a transaction's work changes here (progress
  copied, the jobs whose node is gone) is remembered once it committed
  (`store.after_commit`).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Protocol

from scheduler.loop import apply
from scheduler.loop.report import CycleReport
from scheduler.runtime import jobfiles
from scheduler.services.snapshot import Synced, active_jobs
from scheduler.store import JobState, after_commit
from scheduler.vocab import TIME_LIMIT

log = logging.getLogger("fairgpu.loop")


def format_seconds(seconds: float) -> str:
    """A duration as Slurm prints one: [D-]HH:MM:SS."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


class RunningAttempts(Protocol):
    """What the watch reads of the executor (scheduler.runtime.executor.RayExecutor's)."""

    results_dir: str

    def tracked(self) -> dict[int, int]: ...  # job id -> attempt this server follows
    def task_started_at(self, job_id: int) -> float | None: ...
    def is_running(self, job_id: int) -> bool: ...


class EndAttempt(Protocol):
    """The loop's one way to end an attempt it gives up on: `apply.end_attempt`, with the
    cycle report's bookkeeping (SchedulingLoop.end_attempt)."""

    def __call__(self, s, job, report: CycleReport, lost: apply.Lost, rows: list | None = None) -> apply.Ended: ...


class AttemptWatch:
    """Running attempts: reconcile, time limits, progress, checkpoints (see the module)."""

    def __init__(self, executor: RunningAttempts, meter: apply.UsageMeter, end: EndAttempt, *,
                 discover: bool = True, checkpoint_grace_s: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic):
        self.executor, self.meter, self.end = executor, meter, end
        self.discover = discover  # nodes come from Ray: a job whose node left is stopped
        self.checkpoint_grace_s = checkpoint_grace_s  # how long a victim may take to checkpoint
        self.monotonic = monotonic
        self.progress_period_s = 1.0  # a round over the running jobs' progress files at most this often
        self.progress_chunk = 500  # progress files looked at per cycle
        self._last_progress = float("-inf")
        self._progress_seen: dict[int, float] = {}  # job id -> mtime of the progress last copied
        self._progress_round: list[int] = []  # running jobs this round has still to look at
        self._leaving: set[int] = set()  # tracked jobs whose node was gone at the last reconcile

    def checkpoint(self, job_ids: list[int]) -> None:
        """Ask running tasks to checkpoint now and wait (at most checkpoint_grace_s) until
        they did, or ended: before a preemption or a drain cancels them."""
        if not job_ids or self.checkpoint_grace_s <= 0:
            return
        root = self.executor.results_dir
        for job_id in job_ids:
            jobfiles.request_checkpoint(root, job_id)
        late = jobfiles.wait_checkpoints(root, job_ids, self.checkpoint_grace_s,
                                         done=lambda j: not self.executor.is_running(j))
        if late:
            log.warning("jobs %s did not checkpoint within %g s", sorted(late), self.checkpoint_grace_s)

    def reconcile(self, s, loaded: Synced, report: CycleReport) -> tuple[list[int], list[int]]:
        """The database side of reconcile, on the rows just loaded: returns the attempts to
        stop in Ray (their jobs were cancelled or settled meanwhile) and those whose node left."""
        tracked = self.executor.tracked()
        stop, gone = [], []
        after_commit(s, lambda: setattr(self, "_leaving", set(gone)))  # as this transaction leaves them
        if not tracked:
            return stop, gone
        live_nodes = {n.name for n in loaded.capacity.nodes}  # the active nodes, as loaded
        # Every status change is a job event, so only the jobs this sync re-read can have
        # moved, and only a rebuild changes the nodes: after a rebuild look at every tracked
        # job, else at those re-read and those whose node was gone last cycle.
        look = list(tracked) if loaded.rebuilt else [j for j in {*loaded.changed, *self._leaving} if j in tracked]
        missing = [i for i in look if i not in loaded.jobs]  # finished or cancelled since
        for job in (active_jobs(s, missing) if missing else []):
            if job.state.is_finished() and job.finished_at is not None:  # someone else ended it
                charged = self.meter.charge(s, job, job.finished_at,
                                            started_at=self.executor.task_started_at(job.id))
                report.count(job, charged=charged, state=job.state, by_loop=False)
        stop.extend(missing)
        for job_id in look:
            job = loaded.jobs.get(job_id)
            if job is None:
                continue
            if job.state != JobState.RUNNING or job.attempts != tracked[job_id]:
                stop.append(job_id)  # settled by someone else (requeued): stop it in Ray
            elif self.discover and job.node not in live_nodes:
                gone.append(job_id)
        for job_id in stop:
            self.meter.forget(s, job_id)
        return stop, gone

    def time_out(self, s, loaded: Synced, timed: Collection[int], now: datetime, report: CycleReport) -> list[int]:
        """End the attempts among `timed` (the running jobs with a limit) that ran past their
        wall-time limit (counted from their task's own start): TIMEOUT with reason
        TimeLimit, charged up to the limit; returns them, to be stopped in Ray. One whose
        result is there already succeeded."""
        out = []
        clock = now.timestamp()
        tracked = self.executor.tracked()
        for job_id in [j for j in timed if j in tracked]:
            job = loaded.jobs.get(job_id)
            if job is None or job.time_limit_s is None or job.state != JobState.RUNNING or \
                    job.attempts != tracked[job_id]:
                continue
            started = self.executor.task_started_at(job_id)
            if started is None or clock - started < job.time_limit_s:
                continue
            lost = apply.Lost("timeout", f"ran past its time limit of {format_seconds(job.time_limit_s)}",
                              charge_until=min(apply.ts(started + job.time_limit_s), now), started_at=started,
                              reason=TIME_LIMIT, final=JobState.TIMEOUT)
            if self.end(s, job, report, lost).outcome != apply.Outcome.STALE:
                out.append(job_id)
        return out

    def copy_progress(self, s) -> None:
        """Copy running tasks' progress files into their rows: a round over the running jobs
        starts at most every progress_period_s, and each cycle looks at `progress_chunk` of
        them (one stat each), so a large cluster spreads the round over several cycles."""
        if not self._progress_round:
            if self.monotonic() - self._last_progress < self.progress_period_s:
                return
            self._last_progress = self.monotonic()
            tracked = self.executor.tracked()
            for job_id in [j for j in self._progress_seen if j not in tracked]:
                del self._progress_seen[job_id]
            self._progress_round = list(tracked)
        chunk = self._progress_round[-self.progress_chunk:]
        del self._progress_round[-self.progress_chunk:]
        root = self.executor.results_dir
        seen: dict[int, float] = {}
        for job_id in chunk:
            try:
                mtime = os.stat(os.path.join(root, str(job_id), jobfiles.PROGRESS_FILE)).st_mtime
            except OSError:
                continue
            if mtime <= self._progress_seen.get(job_id, 0.0):
                continue
            progress = jobfiles.read_progress(root, job_id)
            if progress is not None:
                apply.set_progress(s, job_id, progress)
                seen[job_id] = mtime
        if seen:
            after_commit(s, lambda: self._progress_seen.update(seen))
