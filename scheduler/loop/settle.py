"""Settle: what each of Ray's completions means for its job (the cycle's second phase).

Invariants:
- Only the attempt a row still runs is settled: a completion for a job someone else
  settled meanwhile (cancelled, preempted, requeued) only makes the meter forget it.
- A result ends the job SUCCEEDED (the common case, written together: one batch of guarded
  transitions, with their "started" events), charged up to the task's own end; the job's
  own code raising ends it FAILED at once (running it again would not help), spending a
  retry. Every other end goes through the loop's `EndAttempt` (`apply.end_attempt`):
  Ray refusing a placement (no retry spent, the refusal noted by NodeWatch), a lost worker
  or node (one retry spent), and a fence the server did not write (a fence is only ever
  the server's, so the attempt runs again, no retry spent).
- Everything is written in the caller's transaction, usage records in one batch.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from scheduler.loop import apply
from scheduler.loop.report import CycleReport
from scheduler.loop.watch import EndAttempt
from scheduler.runtime import jobfiles
from scheduler.runtime.executor import Completion
from scheduler.services.snapshot import active_jobs
from scheduler.store import JobState
from scheduler.vocab import RAY_REFUSED


def settle(s, completions: list[Completion], report: CycleReport, *, meter: apply.UsageMeter, results_dir: str,
           end: EndAttempt, note_refusal: Callable[..., str]) -> set[int]:
    """Record `completions` (see the module); returns the jobs that SUCCEEDED.
    `note_refusal(s, job_id, error)`: NodeWatch's, the reason a refused job waits with."""
    now: datetime = report.at
    rows = {j.id: j for j in active_jobs(s, [c.job_id for c in completions])}
    usage: list[dict] = []
    succeeded = []  # (job, end, result)
    for c in completions:
        job = rows.get(c.job_id)
        if job is None or job.state != JobState.RUNNING or job.attempts != c.attempt:
            meter.forget(s, c.job_id)
            continue  # already settled (cancelled or preempted) by someone else
        if c.ok:
            until = apply.ts(c.result.task_finished_at)
            report.count(job, charged=meter.charge(s, job, until, usage, started_at=c.result.task_started_at))
            meter.forget(s, job.id)
            succeeded.append((job, until, c.result.as_record()))
            continue
        if c.refused:
            lost = apply.Lost("requeued", note_refusal(s, job.id, c.error), charge_until=now, reason=RAY_REFUSED)
        elif c.infrastructure or c.cancelled:  # its worker or node died (or its node left)
            what = "its node left the cluster" if c.cancelled else f"lost its worker or node: {c.error}"
            lost = apply.Lost("requeued", f"attempt {job.attempts} {what}", own_fault=True, charge_until=now,
                              started_at=c.started_at)
        elif jobfiles.fenced(results_dir, job.id, c.attempt):
            # its publish found a fence, but the server fences only attempts it gave up on
            # (and then the row moved on): not the job's fault, so it runs again
            lost = apply.Lost("requeued", f"attempt {job.attempts}'s result was fenced, not by the server: "
                              "queued again (no retry spent)", charge_until=now, started_at=c.started_at)
        else:  # the job's own code raised: it fails now
            report.count(job, charged=meter.charge(s, job, now, usage, started_at=c.started_at))
            meter.forget(s, job.id)
            try:
                state = apply.finish(s, job, ok=False, at=now, result=None, error=c.error, failures=job.failures + 1)
            except apply.StaleJob:
                continue
            report.count(job, state=state)
            continue
        if end(s, job, report, lost, usage).outcome == apply.Outcome.REQUEUED:
            report.requeued += 1
    done = apply.finish_ok_many(s, succeeded, fresh=True)  # rows read above, in this transaction
    for job, _until, result in succeeded:
        if job.id in done:
            report.count(job, state=JobState.SUCCEEDED, ray_start_delay=result.get("ray_start_delay_s", 0.0))
    apply.insert_usage(s, usage)
    return done
