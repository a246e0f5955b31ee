"""Lean reads of the account tree and capacity for per-request checks (auth, submit, listings).

Invariants:
- One Core query each (the tree: id, name, parent, max_pending and the inherited
  settings of every account; the active nodes), memoised in ``session.info`` so that one
  request (one transaction) reads them at most once, however many checks use them.
  Nothing outlives the session: a change made by an admin is seen by the next request.
- One rule drops the memo, in one place: a flush that writes an account or a node
  (``_forget_after_change``, on every session), so a transaction that changes the tree
  or the capacity reads them again; no caller has to remember to.
- No validation of weights or guarantees here: that is ``accounts`` (quota's
  rules). This is only navigation.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, select

from quota import Capacity
from scheduler.services.capacity import capacity_from_rows
from scheduler.services.errors import NotFound
from scheduler.store import Account, Node

_KEY = "fairgpu.directory"
_CAPACITY_KEY = "fairgpu.capacity"
# Core, not ORM: this runs on every API request.
_QUERY = select(Account.id, Account.name, Account.parent_id, Account.max_pending, Account.default_time_s,
                Account.max_time_s, Account.allow_scripts)
_NODES = (select(Node.name, Node.gpus, Node.slices_per_gpu, Node.gpu_type).where(Node.active == sa.true())
          .order_by(Node.name))


@dataclass(frozen=True)
class Entry:
    id: int
    name: str
    parent_id: int | None
    max_pending: int | None
    # own inherited settings (None: inherit; see services.inherited)
    default_time_s: float | None = None
    max_time_s: float | None = None
    allow_scripts: bool | None = None


class Directory:
    """Accounts by id and by name, with children, ancestors and subtrees."""

    def __init__(self, entries: list[Entry]):
        self.by_id = {e.id: e for e in entries}
        self.by_name = {e.name: e for e in entries}
        self.children: dict[int | None, list[int]] = {}
        for e in entries:
            self.children.setdefault(e.parent_id, []).append(e.id)

    def get(self, name: str) -> Entry:
        entry = self.by_name.get(name)
        if entry is None:
            raise NotFound(f"unknown account {name}")
        return entry

    def is_leaf(self, entry: Entry) -> bool:
        return not self.children.get(entry.id)

    def ancestors(self, entry: Entry) -> list[Entry]:
        """The account itself, then its parent, up to its institution."""
        chain, cur, seen = [], entry, set()
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            chain.append(cur)
            cur = self.by_id.get(cur.parent_id) if cur.parent_id is not None else None
        return chain

    def subtree_ids(self, entry: Entry) -> list[int]:
        out, stack = [], [entry.id]
        while stack:
            i = stack.pop()
            out.append(i)
            stack.extend(self.children.get(i, ()))
        return out

    def subtree_names(self, name: str) -> frozenset[str]:
        return frozenset(self.by_id[i].name for i in self.subtree_ids(self.get(name)))

    def name_of(self, account_id: int) -> str:
        entry = self.by_id.get(account_id)
        return entry.name if entry else f"#{account_id}"


def directory(session: Session) -> Directory:
    """The account tree as of this transaction (read once per session)."""
    cached = session.info.get(_KEY)
    if cached is None:
        rows = session.connection().execute(_QUERY).all()
        cached = Directory([Entry(*r) for r in rows])
        session.info[_KEY] = cached
    return cached


def capacity(session: Session) -> Capacity:
    """Active nodes as quota's ``Capacity`` (as ``services.capacity.load_capacity``), read once per session."""
    cached = session.info.get(_CAPACITY_KEY)
    if cached is None:
        cached = capacity_from_rows(session.connection().execute(_NODES).all())
        session.info[_CAPACITY_KEY] = cached
    return cached


@event.listens_for(OrmSession, "after_flush")
def _forget_after_change(session: OrmSession, _context) -> None:
    """Drop what this session memoised once it wrote an account or a node (the flush's
    objects are still listed as new, dirty or deleted here). A session with nothing
    memoised (the loop's) pays two lookups."""
    info = session.info
    if _KEY not in info and _CAPACITY_KEY not in info:
        return
    if any(isinstance(o, (Account, Node)) for objs in (session.new, session.dirty, session.deleted) for o in objs):
        info.pop(_KEY, None)
        info.pop(_CAPACITY_KEY, None)
