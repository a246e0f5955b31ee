"""Load: build the policy's Snapshot from the database (the first step of load, decide, apply).

Invariants: one read transaction; nothing is written; times become epoch seconds for
quota/. Running jobs whose node is gone stay in the snapshot (they still count against
their account) until the loop requeues them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from quota import PendingRequest, RunningJob, Snapshot
from scheduler.services.accounts import load_tree
from scheduler.services.capacity import load_capacity
from scheduler.services.settings import policy_settings
from scheduler.services.usage import decayed_by_account
from scheduler.store import Account, Job, JobState


@dataclass(frozen=True)
class Loaded:
    snapshot: Snapshot
    jobs: dict[int, Job]  # the active jobs by id, as loaded (with their version)
    account_ids: dict[str, int]


def load_snapshot(session: Session, now: datetime, config=None) -> Loaded:
    settings = policy_settings(session)
    tree = load_tree(session)
    capacity = load_capacity(session)
    names = {a.id: a.name for a in session.exec(select(Account)).all()}
    jobs = session.exec(select(Job).where(Job.state.in_([JobState.PENDING, JobState.RUNNING]))).all()
    pending, running = [], []
    for job in jobs:
        account = names[job.account_id]
        if job.state == JobState.PENDING:
            pending.append(PendingRequest(job.id, account, job.slices, seq=job.queue_seq,
                                          submitted_at=job.submitted_at.timestamp(),
                                          work_s=(job.spec or {}).get("seconds")))
        else:
            running.append(RunningJob(job.id, account, job.node or "", tuple(tuple(x) for x in job.gpu_slices or ()),
                                      (job.started_at or job.submitted_at).timestamp()))
    usage = decayed_by_account(session, now, settings.half_life_s)
    snap = Snapshot(tree=tree, capacity=capacity, pending=tuple(pending), running=tuple(running), usage=usage,
                    now=now.timestamp(), config=config or settings.config)
    return Loaded(snap, {j.id: j for j in jobs}, {v: k for k, v in names.items()})
