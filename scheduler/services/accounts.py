"""The account tree in the database, validated by quota's rules before anything is written.

Invariants (nothing is written when one would break):
- names follow `validate.account_name` and `validate.account_place` (a name with '/'
  is its parent's name, '/', one part); a looked-up name passes `validate.lookup_name`;
- every number lies in its `quota.limits` range (`AccountSpec.check`: LimitError);
- every write goes through `_validated_tree`, which rebuilds the whole tree with the
  change applied (guarantees within the parent's and the capacity, cap >= guarantee,
  no cycle) and raises QuotaError;
- jobs run on leaves: an account with pending or running jobs never gains a child,
  whether by `add --parent` or by `set --parent`. One whose jobs have all ended may
  (Slurm's sub-accounts under an account with history): its finished jobs and usage
  records stay its own, so the report still shows its past usage, rolled up with
  its new sub-accounts', and fair share counts it in its subtree (quota.usage.rollup);
- the inherited settings (default and maximum time, scripts; None inherits, see
  `services.inherited`) are each None or in range, and no account in the changed
  account's subtree is left with an effective default time over its effective maximum.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import sqlalchemy as sa
from sqlmodel import Session, select

from quota import AccountSpec, AccountTree, QuotaError
from scheduler.services import inherited, validate
from scheduler.services.capacity import total_slices
from scheduler.services.errors import DomainError, NotFound
from scheduler.store import Account, Job, JobState

UNSET = object()


def account_specs(session: Session) -> list[AccountSpec]:
    return specs_from_rows([(a.id, a.name, a.parent_id, a.weight, a.guaranteed_slices, a.max_slices, a.max_pending)
                            for a in session.exec(select(Account)).all()])


def specs_from_rows(rows) -> list[AccountSpec]:
    """The policy's accounts from (id, name, parent_id, weight, guaranteed_slices,
    max_slices, max_pending) rows (the loop's loader reads them itself, once a cycle)."""
    names = {r[0]: r[1] for r in rows}
    return [AccountSpec(name=name, weight=weight, parent=names.get(parent_id), guaranteed=guaranteed, cap=cap,
                        max_pending=max_pending)
            for _id, name, parent_id, weight, guaranteed, cap, max_pending in rows]


def own_settings(session: Session) -> dict[str, inherited.Own]:
    """Every account's own inherited settings (None: inherit), by name."""
    rows = session.exec(select(Account)).all()
    names = {a.id: a.name for a in rows}
    return {a.name: inherited.Own(a.name, names.get(a.parent_id), a.default_time_s, a.max_time_s, a.allow_scripts)
            for a in rows}


def load_tree(session: Session) -> AccountTree:
    return AccountTree.build(account_specs(session))


def _validated_tree(session: Session, specs: Iterable[AccountSpec]) -> AccountTree:
    return AccountTree.build(specs, total_slices(session) or None)


def get_account(session: Session, name: str, field: str = "account") -> Account:
    validate.lookup_name(name, field)
    acct = session.exec(select(Account).where(Account.name == name)).first()
    if acct is None:
        raise NotFound(f"unknown account {name}")
    return acct


def _refuse_inner_jobs(session: Session, parent: Account | None) -> None:
    """Jobs run on leaves: an account with active jobs cannot become a parent (its
    finished ones stay its own history)."""
    if parent is not None and session.exec(select(Job.id).where(
            Job.account_id == parent.id, Job.state.in_([JobState.PENDING, JobState.RUNNING]))).first():
        raise DomainError(f"account {parent.name} has jobs of its own; jobs run on leaf accounts only")


def add_account(
    session: Session, name: str, *, weight: float, guaranteed: int = 0, cap: int | None = None,
    max_pending: int | None = None, parent: str | None = None, default_time_s: float | None = None,
    max_time_s: float | None = None, allow_scripts: bool | None = None,
) -> Account:
    """Add an account; the time and scripts settings None inherit from the parent."""
    validate.account_name(name, "name")
    parent = parent or None
    validate.account_place(name, parent)
    spec = AccountSpec(name, weight, parent, guaranteed, cap, max_pending)
    spec.check()
    inherited.check_own(name, default_time_s, max_time_s, allow_scripts)
    specs = account_specs(session)
    if any(s.name == name for s in specs):
        raise DomainError(f"account {name} already exists")
    parent_row = get_account(session, parent, "parent") if parent else None
    _refuse_inner_jobs(session, parent_row)
    _validated_tree(session, [*specs, spec])
    own = own_settings(session)
    own[name] = inherited.Own(name, parent, default_time_s, max_time_s, allow_scripts)
    inherited.check_times(own, name)
    row = Account(name=name, parent_id=parent_row.id if parent_row else None, weight=weight,
                  guaranteed_slices=guaranteed, max_slices=cap, max_pending=max_pending,
                  default_time_s=_seconds(default_time_s), max_time_s=_seconds(max_time_s),
                  allow_scripts=allow_scripts)
    session.add(row)
    session.flush()
    return row


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)


def set_account(
    session: Session, name: str, *, weight=None, guaranteed=None, cap=UNSET, max_pending=UNSET, parent=UNSET,
    default_time_s=UNSET, max_time_s=UNSET, allow_scripts=UNSET,
) -> Account:
    """Change some of an account's settings; cap/max_pending accept None to clear them, and
    default_time_s/max_time_s/allow_scripts None to inherit them from the parent again."""
    row = get_account(session, name)
    settings = {"default_time_s": default_time_s, "max_time_s": max_time_s, "allow_scripts": allow_scripts}
    settings = {k: (getattr(row, k) if v is UNSET else v) for k, v in settings.items()}
    inherited.check_own(name, **settings)
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
    own = own_settings(session)
    own[name] = inherited.Own(name, specs[name].parent, **settings)
    inherited.check_times(own, name)
    row.weight = specs[name].weight
    row.guaranteed_slices = specs[name].guaranteed
    row.max_slices = specs[name].cap
    row.max_pending = specs[name].max_pending
    row.default_time_s = _seconds(settings["default_time_s"])
    row.max_time_s = _seconds(settings["max_time_s"])
    row.allow_scripts = settings["allow_scripts"]
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


def list_accounts(session: Session) -> list[dict]:
    """Accounts in tree order: their quotas, their own time and scripts settings (None:
    inherited) and, under ``effective``, the values in force with the account each comes
    from (``from``; None: the built-in default)."""
    tree = load_tree(session)
    own = own_settings(session)
    return [
        {
            "account": n, "parent": tree.accounts[n].parent, "weight": tree.accounts[n].weight,
            "guaranteed_slices": tree.accounts[n].guaranteed, "max_slices": tree.accounts[n].cap,
            "max_pending": tree.accounts[n].max_pending, "depth": tree.depth[n],
            "default_time_s": own[n].default_time_s, "max_time_s": own[n].max_time_s,
            "allow_scripts": own[n].allow_scripts,
            "effective": inherited.describe(inherited.resolve(inherited.chain_of(own, n))),
        }
        for n in tree.order
    ]


__all__ = ["QuotaError", "add_account", "set_account", "remove_account", "list_accounts", "load_tree",
           "get_account", "account_specs", "own_settings", "UNSET"]
