"""Apply: carry a Decision and Ray's completions into the database (the last step of
load, decide, apply). Each function runs one short transaction and makes no network call.

Invariants:
- Job status changes only through scheduler.store.transition (guarded by version);
  a StaleJob means the API changed the job meanwhile (e.g. cancelled it): skip it.
- Usage is charged in slice-seconds for exactly the time a job held its slices:
  the meter remembers up to when each running job was charged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlmodel import Session, select

from scheduler.services.usage import record_usage
from scheduler.store import Job, JobState, StaleJob, UsageRecord, add_event, head_queue_seq, transition

log = logging.getLogger("fairgpu.apply")


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


@dataclass
class UsageMeter:
    """Up to when each running job's slice-seconds have been charged (epoch seconds)."""

    charged_until: dict[int, float] = field(default_factory=dict)

    def charge(self, session: Session, job: Job, until: datetime) -> float:
        start = self.charged_until.get(job.id)
        if start is None:
            start = (job.started_at or until).timestamp()
            last = session.exec(
                select(sa.func.max(UsageRecord.at)).where(UsageRecord.job_id == job.id)
            ).one()
            if last is not None and job.started_at is not None and last >= job.started_at:
                start = last.timestamp()
        seconds = max(0.0, until.timestamp() - start)
        amount = seconds * job.slices
        record_usage(session, job.account_id, amount, until, job_id=job.id)
        self.charged_until[job.id] = max(start, until.timestamp())
        return amount

    def forget(self, job_id: int) -> None:
        self.charged_until.pop(job_id, None)


def admit(session: Session, job: Job, *, node: str, gpu_slices, at: datetime) -> Job:
    return transition(session, job, JobState.RUNNING, at=at, node=node, gpu=gpu_slices[0][0],
                      gpu_slices=[list(x) for x in gpu_slices],
                      message=f"on node {node[:12]}, GPU slices {list(map(list, gpu_slices))}")


def requeue(session: Session, job: Job, *, at: datetime, event: str, message: str, head: bool = True) -> Job:
    fields = {"queue_seq": head_queue_seq(session, job)} if head else {}
    return transition(session, job, JobState.PENDING, at=at, event=event, message=message, **fields)


def finish(session: Session, job: Job, *, ok: bool, at: datetime, result: dict | None, error: str | None) -> Job:
    if result and result.get("task_started_at"):
        add_event(session, job.id, "started", f"Ray started it {result.get('ray_start_delay_s', 0):.3f} s "
                  "after it was handed over", ts(result["task_started_at"]))
    state = JobState.SUCCEEDED if ok else JobState.FAILED
    return transition(session, job, state, at=at, result=result, error=error,
                      message=None if ok else (error or "failed")[:500])


def set_reasons(session: Session, reasons: dict[int, tuple[str, str]], current: dict[int, tuple]) -> int:
    """Store why each pending job waits; only rows whose reason changed are written."""
    changed = 0
    for job_id, (reason, message) in reasons.items():
        if current.get(job_id) == (reason, message):
            continue
        session.exec(
            sa.update(Job).where(Job.id == job_id, Job.state == JobState.PENDING)
            .values(reason=reason, reason_message=message).execution_options(synchronize_session=False)
        )
        changed += 1
    return changed


__all__ = ["UsageMeter", "admit", "requeue", "finish", "set_reasons", "StaleJob", "ts"]
