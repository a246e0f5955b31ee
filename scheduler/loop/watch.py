"""What the scheduling loop asks of and reads from running attempts: checkpoints before
a preemption or a drain, progress files copied into the rows, wall-time limits.

A mixin of scheduler.loop.SchedulingLoop (it uses the loop's executor, loader, meter and
`_end`), kept apart to keep the loop short.

Invariants:
- Nothing here calls Ray inside a transaction: `checkpoint` runs before the loop's
  transactions (files only); the others write through the session they are given.
- A time limit counts from the attempt's own task start, and ends the attempt TIMEOUT
  with reason TimeLimit through `apply.end_attempt` (a status change with its version
  guard); only running jobs with a limit are looked at (`SnapshotLoader.timed`).
- Progress is not a status change: copied without a version bump, a bounded number of
  progress files looked at per cycle; what was copied is remembered once the transaction
  that copied it committed (`store.after_commit`).
"""
from __future__ import annotations

import logging
import os
import time
from datetime import datetime

from scheduler.loop import apply

from scheduler.runtime import jobfiles
from scheduler.store import JobState, after_commit
from scheduler.vocab import TIME_LIMIT

log = logging.getLogger("fairgpu.loop")


def format_seconds(seconds: float) -> str:
    """A duration as Slurm prints one: [D-]HH:MM:SS."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


class AttemptWatch:
    """Checkpoints, progress and time limits of the running attempts (see the module)."""

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

    def _copy_progress(self, s) -> None:
        """Copy running tasks' progress files into their rows: a round over the running jobs
        starts at most every progress_period_s, and each cycle looks at `progress_chunk` of
        them (one stat each), so a large cluster spreads the round over several cycles."""
        if not self._progress_round:
            if time.monotonic() - self._last_progress < self.progress_period_s:
                return
            self._last_progress = time.monotonic()
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

    def _time_out(self, s, loaded, now: datetime, report) -> list[int]:
        """End the attempts that ran past their wall-time limit (counted from their task's
        own start): TIMEOUT with reason TimeLimit, charged up to the limit; returns them,
        to be stopped in Ray. One whose result is there already succeeded."""
        out = []
        clock = now.timestamp()
        tracked = self.executor.tracked()
        for job_id in [j for j in self.loader.timed if j in tracked]:  # running jobs with a limit only
            job = loaded.jobs.get(job_id)
            if job is None or job.time_limit_s is None or job.state != JobState.RUNNING or \
                    job.attempts != tracked[job_id]:
                continue
            started = self.executor.task_started_at(job_id)
            if started is None or clock - started < job.time_limit_s:
                continue
            limit = apply.ts(started + job.time_limit_s)
            lost = apply.Lost("timeout", f"ran past its time limit of {format_seconds(job.time_limit_s)}",
                              charge_until=min(limit, now), started_at=started, reason=TIME_LIMIT,
                              final=JobState.TIMEOUT)
            if self._end(s, job, report, lost).outcome != apply.Outcome.STALE:
                out.append(job_id)
        if out:
            self._wake.set()  # their slices are free: decide again at once
        return out
