"""The account tree in the database, validated by quota's rules before anything is written.

Invariants (nothing is written when one would break):
- names follow `validate.account_name` and `validate.account_place` (a name with '/'
  is its parent's name, '/', one part); a looked-up name passes `validate.lookup_name`;
- every number lies in its `quota.limits` range (`AccountSpec.check`: LimitError);
- every write goes through `_validated_tree`, which rebuilds the whole tree with the
  change applied (guarantees within the parent's and the capacity, cap >= guarantee,
  no cycle) and raises QuotaError;
- jobs run on leaves: an account with jobs on record never gains a child, whether
  by `add --parent` or by `set --parent`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import sqlalchemy as sa
from sqlmodel import Session, select

from quota import AccountSpec, AccountTree, QuotaError
from scheduler.services import validate
from scheduler.services.capacity import total_slices
from scheduler.services.errors import DomainError, NotFound
from scheduler.store import Account, Job

UNSET = object()


def account_specs(session: Session) -> list[AccountSpec]:
    rows = session.exec(select(Account)).all()
    names = {a.id: a.name for a in rows}
    return [
        AccountSpec(
            name=a.name, weight=a.weight, parent=names.get(a.parent_id), guaranteed=a.guaranteed_slices,
            cap=a.max_slices, max_pending=a.max_pending,
        )
        for a in rows
    ]


def load_tree(session: Session) -> AccountTree:
    return AccountTree.build(account_specs(session))


def _validated_tree(session: Session, specs: Iterable[AccountSpec]) -> AccountTree:
    tree = AccountTree.build(specs, total_slices(session) or None)
    session.info.pop("fairgpu.directory", None)  # the per-transaction account directory is stale now
    return tree


def get_account(session: Session, name: str, field: str = "account") -> Account:
    validate.lookup_name(name, field)
    acct = session.exec(select(Account).where(Account.name == name)).first()
    if acct is None:
        raise NotFound(f"unknown account {name}")
    return acct


def _refuse_inner_jobs(session: Session, parent: Account | None) -> None:
    """Jobs run on leaves: an account with jobs on record cannot become a parent."""
    if parent is not None and session.exec(select(Job.id).where(Job.account_id == parent.id)).first():
        raise DomainError(f"account {parent.name} has jobs of its own; jobs run on leaf accounts only")


def add_account(
    session: Session, name: str, *, weight: float, guaranteed: int = 0, cap: int | None = None,
    max_pending: int | None = None, parent: str | None = None,
) -> Account:
    validate.account_name(name, "name")
    parent = parent or None
    validate.account_place(name, parent)
    spec = AccountSpec(name, weight, parent, guaranteed, cap, max_pending)
    spec.check()
    specs = account_specs(session)
    if any(s.name == name for s in specs):
        raise DomainError(f"account {name} already exists")
    parent_row = get_account(session, parent, "parent") if parent else None
    _refuse_inner_jobs(session, parent_row)
    _validated_tree(session, [*specs, spec])
    row = Account(name=name, parent_id=parent_row.id if parent_row else None, weight=weight,
                  guaranteed_slices=guaranteed, max_slices=cap, max_pending=max_pending)
    session.add(row)
    session.flush()
    return row


def set_account(
    session: Session, name: str, *, weight=None, guaranteed=None, cap=UNSET, max_pending=UNSET, parent=UNSET,
) -> Account:
    """Change some of an account's settings; cap/max_pending accept None to clear them."""
    row = get_account(session, name)
    specs = {s.name: s for s in account_specs(session)}
    spec = specs[name]
    changes = {}
    if weight is not None:
        changes["weight"] = weight
    if guaranteed is not None:
        changes["guaranteed"] = guaranteed
    if cap is not UNSET:
        changes["cap"] = cap
    if max_pending is not UNSET:
        changes["max_pending"] = max_pending
    if parent is not UNSET:
        changes["parent"] = parent or None
        validate.account_place(name, changes["parent"])
    specs[name] = replace(spec, **changes)
    specs[name].check()
    new_parent_row = None
    if parent is not UNSET and parent:
        new_parent_row = get_account(session, parent, "parent")
        if new_parent_row.id != row.parent_id:
            _refuse_inner_jobs(session, new_parent_row)
    _validated_tree(session, specs.values())
    row.weight = specs[name].weight
    row.guaranteed_slices = specs[name].guaranteed
    row.max_slices = specs[name].cap
    row.max_pending = specs[name].max_pending
    if parent is not UNSET:
        row.parent_id = new_parent_row.id if new_parent_row else None
    session.add(row)
    session.flush()
    return row


def remove_account(session: Session, name: str) -> None:
    row = get_account(session, name)
    if session.exec(select(Account.id).where(Account.parent_id == row.id)).first() is not None:
        raise DomainError(f"account {name} has sub-accounts: remove them first")
    jobs = session.exec(select(sa.func.count()).select_from(Job).where(Job.account_id == row.id)).one()
    if jobs:
        raise DomainError(f"account {name} has {jobs} job(s) on record and cannot be removed")
    session.delete(row)
    session.flush()
    session.info.pop("fairgpu.directory", None)


def list_accounts(session: Session) -> list[dict]:
    tree = load_tree(session)
    return [
        {
            "account": n, "parent": tree.accounts[n].parent, "weight": tree.accounts[n].weight,
            "guaranteed_slices": tree.accounts[n].guaranteed, "max_slices": tree.accounts[n].cap,
            "max_pending": tree.accounts[n].max_pending, "depth": tree.depth[n],
        }
        for n in tree.order
    ]


__all__ = ["QuotaError", "add_account", "set_account", "remove_account", "list_accounts", "load_tree",
           "get_account", "account_specs", "UNSET"]
