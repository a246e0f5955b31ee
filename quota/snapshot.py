"""What the policy sees (Snapshot) and what it says (Decision). Plain, immutable data.

The scheduler builds a Snapshot from the database and Ray each cycle, passes it to
`quota.decide`, and applies the Decision; the simulator does the same on a virtual
clock. Nothing here reads a clock, a database or Ray.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from quota.capacity import Capacity, GpuSlices
from quota.fairshare import ALGORITHMS, CLASSIC
from quota.tree import AccountTree

# Why a request is still waiting (the same words as Slurm's squeue where they exist).
PRIORITY = "Priority"  # there was room, but accounts ahead of it in fair-share order took it
RESOURCES = "Resources"  # not enough free slices
QUOTA_CAP = "QuotaCap"  # the account (or an ancestor) would go over its cap
FRAGMENTATION = "Fragmentation"  # enough slices are free, but not on one GPU / node
INFEASIBLE = "Infeasible"  # no node can ever hold it
REASONS = (PRIORITY, RESOURCES, QUOTA_CAP, FRAGMENTATION, INFEASIBLE)

# Why a running job is preempted: data beside the message, as a Waiting's reason is.
RECLAIM_GUARANTEE = "reclaim_guarantee"  # its slices go to an account below its guarantee
RECLAIM_FAIR_SHARE = "reclaim_fair_share"  # ... to an account below its entitlement (reclaim = "entitlement")
PREEMPTION_KINDS = (RECLAIM_GUARANTEE, RECLAIM_FAIR_SHARE)

ORDERINGS = ("fair-share", "fifo", "static", "finish-time")
RECLAIM_MODES = ("guarantee", "entitlement")

JobId = Hashable


@dataclass(frozen=True)
class PolicyConfig:
    """How to order and reclaim. The default is weighted fair share with decayed usage."""

    ordering: str = "fair-share"
    use_history: bool = True  # order borrowing (and break ties) by the fair-share factor
    algorithm: str = CLASSIC
    preemption: bool = True
    reclaim: str = "guarantee"  # reclaim up to the guarantee, or up to the full entitlement
    max_victim_scan: int = 256  # running jobs examined per preempting request

    def __post_init__(self) -> None:
        if self.ordering not in ORDERINGS:
            raise ValueError(f"unknown ordering {self.ordering!r} (choose {', '.join(ORDERINGS)})")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown fair-share algorithm {self.algorithm!r}")
        if self.reclaim not in RECLAIM_MODES:
            raise ValueError(f"unknown reclaim mode {self.reclaim!r} (choose {', '.join(RECLAIM_MODES)})")


@dataclass(frozen=True)
class PendingRequest:
    id: JobId
    account: str
    slices: int
    seq: float  # queue order: lower goes first within its account (a requeued job keeps its seq)
    submitted_at: float = 0.0
    work_s: float | None = None  # expected run time, used only by the finish-time ordering


@dataclass(frozen=True)
class RunningJob:
    id: JobId
    account: str
    node: str
    gpu_slices: GpuSlices
    started_at: float
    # the slices it holds: read in every victim search and ledger step, so summed once here
    slices: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "slices", sum([n for _, n in self.gpu_slices]))


@dataclass(frozen=True)
class Snapshot:
    tree: AccountTree
    capacity: Capacity
    pending: tuple[PendingRequest, ...] = ()
    running: tuple[RunningJob, ...] = ()
    usage: Mapping[str, float] = field(default_factory=dict)  # decayed slice-seconds, own (leaf) usage
    now: float = 0.0
    config: PolicyConfig = field(default_factory=PolicyConfig)


@dataclass(frozen=True)
class Admission:
    request_id: JobId
    account: str
    node: str
    gpu_slices: GpuSlices
    slices_per_gpu: int
    preempts: tuple[JobId, ...] = ()  # running jobs that must stop before this one starts

    @property
    def slices(self) -> int:
        return sum(n for _, n in self.gpu_slices)

    @property
    def num_gpus(self) -> float:
        return self.slices / self.slices_per_gpu


@dataclass(frozen=True)
class Preemption:
    job_id: JobId
    account: str
    for_request: JobId
    for_account: str
    reason: str  # the message, e.g. "reclaim: team-b is below its guarantee of 4 slices"
    kind: str  # one of PREEMPTION_KINDS: what metrics label it by (never parsed from `reason`)


class Waiting(NamedTuple):  # a tuple: decide() makes one per waiting request
    request_id: JobId
    account: str
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    admissions: tuple[Admission, ...]
    preemptions: tuple[Preemption, ...]
    waiting: Mapping[JobId, Waiting]
    entitled: Mapping[str, float]  # every account, inner ones included
    allocated: Mapping[str, int]  # slices after this decision, rolled up the tree
    demand: Mapping[str, float]
    factor: Mapping[str, float]  # fair-share factor per account

    def reason_of(self, request_id: JobId) -> str | None:
        w = self.waiting.get(request_id)
        return w.reason if w else None

    def free_slices(self, snapshot: Snapshot) -> int:
        """Slices of `snapshot`'s capacity no job holds once this decision is applied (the
        institutions' allocations roll up every job)."""
        held = sum(self.allocated.get(a, 0) for a in snapshot.tree.kids(None))
        return max(0, snapshot.capacity.total_slices - held)
