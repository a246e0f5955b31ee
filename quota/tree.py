"""The account tree: institutions, then departments, projects or users, to any depth.

Invariants (checked by `AccountTree.build`, which raises `QuotaError` naming the
offending account):
- names are unique; every parent exists; there is no cycle;
- weight > 0, guaranteed >= 0, cap (max_slices) is None or >= guaranteed,
  max_pending is None or >= 0;
- the guarantees of siblings sum to at most their parent's guarantee, and the
  guarantees of the top level to at most the capacity (when one is given).

The tree is immutable once built and iterates in a deterministic order
(depth-first, siblings by name), so every computation over it is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

from quota import limits
from quota.errors import QuotaError
from quota.limits import LimitError


@dataclass(frozen=True)
class AccountSpec:
    name: str
    weight: float = 1.0
    parent: str | None = None
    guaranteed: int = 0
    cap: int | None = None
    max_pending: int | None = None

    def check(self) -> None:
        """Each number within its range in quota.limits (LimitError), and cap >= guarantee."""
        if not self.name:
            raise QuotaError("account name must not be empty")
        try:
            limits.WEIGHT.check(self.weight)
            limits.GUARANTEED.check(self.guaranteed)
            if self.cap is not None:
                limits.MAX_SLICES.check(self.cap)
            if self.max_pending is not None:
                limits.MAX_PENDING.check(self.max_pending)
        except LimitError as exc:
            raise LimitError(f"account {self.name}: {exc}") from None
        if self.cap is not None and self.cap < self.guaranteed:
            raise QuotaError(
                f"account {self.name}: max slices {self.cap} is below its guarantee {self.guaranteed}"
            )


@dataclass(frozen=True)
class AccountTree:
    """An immutable, validated account tree."""

    accounts: Mapping[str, AccountSpec]
    children: Mapping[str | None, tuple[str, ...]]
    order: tuple[str, ...]  # depth-first, siblings by name; parents before children
    depth: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, specs: Iterable[AccountSpec], capacity: int | None = None) -> "AccountTree":
        accounts: dict[str, AccountSpec] = {}
        for spec in specs:
            spec.check()
            if spec.name in accounts:
                raise QuotaError(f"account {spec.name} already exists")
            accounts[spec.name] = spec
        children: dict[str | None, list[str]] = {None: []}
        for spec in accounts.values():
            if spec.parent is not None and spec.parent not in accounts:
                raise QuotaError(f"account {spec.name}: unknown parent {spec.parent}")
            children.setdefault(spec.parent, []).append(spec.name)
        frozen = {k: tuple(sorted(v)) for k, v in children.items()}
        order: list[str] = []
        depth: dict[str, int] = {}
        stack = [(name, 0) for name in reversed(frozen[None])]
        while stack:
            name, d = stack.pop()
            order.append(name)
            depth[name] = d
            stack.extend((c, d + 1) for c in reversed(frozen.get(name, ())))
        if len(order) != len(accounts):
            cyclic = sorted(set(accounts) - set(order))
            raise QuotaError(f"accounts {', '.join(cyclic)} form a cycle")
        tree = cls(accounts=accounts, children=frozen, order=tuple(order), depth=depth)
        tree._check_guarantees(capacity)
        return tree

    def _check_guarantees(self, capacity: int | None) -> None:
        for parent, kids in self.children.items():
            total = sum(self.accounts[k].guaranteed for k in kids)
            if parent is None:
                if capacity is not None and total > capacity:
                    raise QuotaError(
                        f"top-level guarantees sum to {total} slices, over the capacity of {capacity}"
                    )
            elif total > self.accounts[parent].guaranteed:
                raise QuotaError(
                    f"guarantees under {parent} sum to {total} slices, over its own guarantee of "
                    f"{self.accounts[parent].guaranteed}"
                )

    # -- navigation -----------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.accounts

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.accounts)

    def spec(self, name: str) -> AccountSpec:
        try:
            return self.accounts[name]
        except KeyError:
            raise QuotaError(f"unknown account {name}") from None

    def kids(self, name: str | None) -> tuple[str, ...]:
        return self.children.get(name, ())

    def is_leaf(self, name: str) -> bool:
        return not self.children.get(name)

    def leaves(self) -> list[str]:
        return [n for n in self.order if self.is_leaf(n)]

    def ancestors(self, name: str) -> list[str]:
        """The account itself, then its parent, up to the top level."""
        chain = []
        cur: str | None = name
        while cur is not None:
            chain.append(cur)
            cur = self.accounts[cur].parent
        return chain

    def top(self, name: str) -> str:
        return self.ancestors(name)[-1]

    def subtree(self, name: str) -> list[str]:
        out, stack = [], [name]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(self.children.get(n, ()))
        return out

    def replace(self, spec: AccountSpec, capacity: int | None = None) -> "AccountTree":
        """A new tree with one account added or changed, validated as a whole."""
        specs = dict(self.accounts)
        specs[spec.name] = spec
        return AccountTree.build(specs.values(), capacity)

    def without(self, name: str, capacity: int | None = None) -> "AccountTree":
        self.spec(name)
        if self.children.get(name):
            raise QuotaError(f"account {name} has sub-accounts: remove them first")
        return AccountTree.build((s for n, s in self.accounts.items() if n != name), capacity)
