"""Which account goes next: one key function per ordering. Lower keys go first.

- fair-share (default): accounts below their guarantee first (the furthest below first);
  then accounts below their entitlement; among them the one
  with the highest fair-share factor (least recent usage for its shares), then the
  one that would hold the smallest share after admitting its next request
  ((allocated + k) / entitled, the water-filling order). Then borrowing, again by
  fair-share factor. Without history both steps go by (allocated + k) / entitled.
- static: as fair-share, but `decide` never lets an account past its static share.
- fifo: the oldest request in the whole queue first, whatever its account (what Ray
  alone gives).
- finish-time (after Themis): the account whose finish-time fairness ratio
  rho = (wait so far + isolated run time) / isolated run time is largest goes first;
  isolated run time is the account's pending work over an equal 1/N share.
Keys end with the account name, so ties break the same way every time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from quota.snapshot import PendingRequest

EPS = 1e-9


@dataclass
class AccountState:
    name: str
    entitled: float
    allocated: int
    factor: float
    queue: list[PendingRequest]
    pos: int = 0
    pending_work: float = 0.0  # slice-seconds, finish-time ordering only
    guaranteed: int = 0

    def head(self) -> PendingRequest | None:
        return self.queue[self.pos] if self.pos < len(self.queue) else None


def fair_share_key(use_history: bool) -> Callable[[AccountState], tuple]:
    def key(s: AccountState) -> tuple:
        head = s.head()
        after = s.allocated + (head.slices if head is not None else 0)
        # the share the account would hold after its next admission, as in water-filling
        ratio = after / s.entitled if s.entitled > EPS else float("inf")
        f = -s.factor if use_history else 0.0
        if s.allocated < s.guaranteed:  # guarantees come first, whatever the history
            return (0, s.allocated / s.guaranteed, ratio, s.name)
        if s.allocated + EPS < s.entitled:
            # history first: when slices do not divide evenly (8 slices at 1:2:3 owe 1.33,
            # 2.67 and 4), the account served least for its shares takes the odd slice, so
            # over time each gets its fractional entitlement, not a rounded one
            return (1, f, ratio, s.name)
        return (2, f if use_history else ratio, ratio, s.name)

    return key


def fifo_key(s: AccountState) -> tuple:
    head = s.head()
    assert head is not None
    return (head.submitted_at, head.seq, s.name)


def finish_time_key(now: float, fair_slices: float) -> Callable[[AccountState], tuple]:
    def key(s: AccountState) -> tuple:
        head = s.head()
        assert head is not None
        isolated = max(s.pending_work, EPS) / max(fair_slices, EPS)
        waited = max(0.0, now - head.submitted_at)
        rho = (waited + isolated) / isolated
        return (-rho, s.allocated, s.name)

    return key


def key_for(ordering: str, use_history: bool, now: float, fair_slices: float) -> Callable[[AccountState], tuple]:
    if ordering in ("fair-share", "static"):
        return fair_share_key(use_history)
    if ordering == "fifo":
        return fifo_key
    return finish_time_key(now, fair_slices)


def static_limits(entitled_static: Mapping[str, float]) -> dict[str, int]:
    return {a: int(e + EPS) for a, e in entitled_static.items()}
