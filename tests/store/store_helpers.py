"""Factories and a fixed clock for the store tests (no test reads real time)."""
from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from scheduler.store import Account, Job
from scheduler.store.transitions import submit_jobs

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_names = itertools.count()


def make_account(session, name: str | None = None, **kw) -> Account:
    account = Account(name=name or f"acct-{next(_names)}", weight=kw.pop("weight", 1.0), **kw)
    session.add(account)
    session.flush()
    return account


def make_job(session, account: Account | None = None, *, at: datetime = T0, slices: int = 1, **kw) -> Job:
    """A PENDING job, inserted as the services insert every job (an array of one)."""
    account = account or make_account(session)
    (job_id,) = submit_jobs(
        session,
        count=1,
        account_id=account.id,
        model=kw.pop("model", "resnet18"),
        framework=kw.pop("framework", "torch"),
        mode=kw.pop("mode", "train"),
        slices=slices,
        spec=kw.pop("spec", {"steps": 10, "batch_size": 32}),
        at=at,
    )
    return session.get(Job, job_id)


def later(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)
