"""Lazy: a read-only mapping computed on its first read, for per-cycle figures that most
cycles never read.

A scheduling cycle returns each account's entitlement and fair-share factor with its
decision (`Decision.entitled`, `Decision.factor`), but a cycle in which a single account
has requests queued and none can reclaim decides without either: the turn order of one
account is that account. The simulator runs tens of thousands of such cycles. So the
cycle hands back a `Lazy` that computes the figures only if someone reads them.

Invariants: `fn` is called at most once, and only on a read; it must be a function of
values captured when the Lazy was made (so reading later gives what reading at once
would have). A Lazy equals the plain dict it stands for (Mapping equality), so a decision
holding one compares equal to one holding the dict.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any


class Lazy(Mapping):
    __slots__ = ("_fn", "_value")

    def __init__(self, fn: Callable[[], dict]):
        self._fn: Callable[[], dict] | None = fn
        self._value: dict | None = None

    @property
    def value(self) -> dict:
        """The dict itself (computed now if it was not yet): read it in hot loops."""
        if self._value is None:
            self._value = self._fn()  # type: ignore[misc]
            self._fn = None
        return self._value

    def __getitem__(self, key: Any) -> Any:
        return self.value[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.value.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.value

    def __iter__(self) -> Iterator:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Lazy):
            other = other.value
        return self.value == other if isinstance(other, Mapping) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Lazy({self.value!r})"


def resolved(m: Mapping) -> Mapping:
    """The plain dict behind a Lazy (computed now), or `m` itself."""
    return m.value if isinstance(m, Lazy) else m
