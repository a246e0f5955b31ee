"""Pending limits: the one rule and its one message, for a single submission, a job
array and a group commit's batch alike.

An account's ``max_pending`` bounds the PENDING jobs of its whole subtree; a submission
of ``count`` jobs is refused (``DomainError``, HTTP 409) when it would put its account
or any ancestor over its limit.

Invariants:
- Exact across writers: on PostgreSQL every limited account above a submission is
  locked (``SELECT ... FOR UPDATE``, in id order) before its pending jobs are counted,
  and held to the end of the transaction, so two transactions cannot both see room for
  the same last job; SQLite transactions are already serialised (``BEGIN IMMEDIATE``).
- Exact within a transaction: locks and counts are kept in ``session.info`` (``load``
  reads each at most once per transaction) and every job checked and then written or
  planned in it is added (``add``), so later submissions in the same transaction are
  checked against it. A caller that rolls back part of the transaction (a savepoint,
  ``services.committer``) must put ``session.info`` back as it was.
- Batch-aware: ``load`` takes every account of a batch at once: one lock statement
  and one count statement for all of them, whatever their number (the committer's
  batch calls it before its submissions run). ``check`` loads what is missing for its
  one account itself, so a submission alone needs no preparation.
"""
from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlmodel import Session, select

from scheduler.services.errors import DomainError
from scheduler.store import Account, Job, JobState

# Built once: constructing and caching a statement per call costs more than running it.
_PENDING_BY_ACCOUNT = (
    select(Job.account_id, sa.func.count())
    .where(Job.state == JobState.PENDING, Job.account_id.in_(sa.bindparam("ids", expanding=True)))
    .group_by(Job.account_id)
)
_LOCK_ACCOUNTS = (select(Account.id).where(Account.id.in_(sa.bindparam("ids", expanding=True)))
                  .order_by(Account.id).with_for_update())
_COUNTS = "fairgpu.pending_counts"  # session.info: {account id: pending jobs}, read in this transaction
_LOCKED = "fairgpu.pending_locked"  # session.info: ids of the accounts locked in this transaction


def _limited(tree, entry) -> list:
    """``entry`` and its ancestors that have a pending limit, nearest first."""
    return [e for e in tree.ancestors(entry) if e.max_pending is not None]


def load(session: Session, tree, entries: Iterable) -> None:
    """Lock (PostgreSQL) every limited account above ``entries`` and read the pending
    counts of their subtrees: what this transaction has not locked or read yet, in one
    statement each."""
    limited: dict[int, object] = {}
    for entry in entries:
        for e in _limited(tree, entry):
            limited[e.id] = e
    if not limited:
        return
    info = session.info
    if session.get_bind().dialect.name != "sqlite":
        locked = info.setdefault(_LOCKED, set())
        want = sorted(i for i in limited if i not in locked)
        if want:
            session.connection().execute(_LOCK_ACCOUNTS, {"ids": want}).all()
            locked.update(want)
    counts = info.setdefault(_COUNTS, {})
    missing = sorted({i for e in limited.values() for i in tree.subtree_ids(e)} - counts.keys())
    if missing:
        found = dict(session.connection().execute(_PENDING_BY_ACCOUNT, {"ids": missing}).all())
        counts.update((i, found.get(i, 0)) for i in missing)


def check(session: Session, tree, entry, count: int = 1) -> None:
    """Refuse (``DomainError``) when ``count`` more jobs would put ``entry`` or an ancestor
    over its pending limit; nothing is counted (``add`` does, once the jobs are written
    or planned)."""
    limited = _limited(tree, entry)
    if not limited:
        return
    load(session, tree, [entry])
    counts = session.info[_COUNTS]
    for e in limited:
        pending = sum(counts.get(i, 0) for i in tree.subtree_ids(e))
        if pending + count > e.max_pending:
            who = "its" if e is entry else f"{e.name}'s"
            if count == 1:
                raise DomainError(
                    f"account {entry.name} is at {who} limit of {e.max_pending} pending jobs ({pending} waiting); "
                    "wait for some to start or cancel some"
                )
            raise DomainError(
                f"{count} more jobs would put account {entry.name} over {who} limit of {e.max_pending} pending "
                f"jobs ({pending} waiting); submit fewer, or wait for some to start"
            )


def add(session: Session, account_id: int, count: int) -> None:
    """``count`` jobs of ``account_id`` were written or planned in this transaction."""
    counts = session.info.get(_COUNTS)
    if counts is not None and account_id in counts:  # the counts read in this transaction
        counts[account_id] += count
