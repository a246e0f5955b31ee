"""fairgpu's policy core: the fairness math and the scheduling policy.

Pure and deterministic: it imports no Ray, database, metrics or ML framework, and
never reads a clock (times are passed in). `decide(snapshot) -> Decision` is the one
entry point the scheduler and the simulator both drive; `PolicyState` runs the same
cycle incrementally for callers that run many cycles (quota/state.py). `report(snapshot,
decision)` is the one owner of per-account figures (quota/report.py).
"""
from quota.capacity import DEFAULT_SLICES_PER_GPU, Capacity, FreeSlices, NodeCapacity, Placement
from quota.entitlement import entitlements, water_fill
from quota.equity import Equity, cluster_equity, gini, jain_index, jain_of_shares, share_deviation, usage_gini
from quota.errors import QuotaError
from quota.fairshare import ALGORITHMS, CLASSIC, FAIR_TREE, compute as fair_share
from quota.policy import decide
from quota.period import PeriodFigures, PeriodResult, Span, integrate as integrate_period
from quota.report import AccountFigures, report
from quota.state import PolicyState
from quota.snapshot import (
    FRAGMENTATION,
    INFEASIBLE,
    ORDERINGS,
    PREEMPTION_KINDS,
    PRIORITY,
    QUOTA_CAP,
    REASONS,
    RECLAIM_FAIR_SHARE,
    RECLAIM_GUARANTEE,
    RESOURCES,
    Admission,
    Decision,
    PendingRequest,
    PolicyConfig,
    Preemption,
    RunningJob,
    Snapshot,
    Waiting,
)
from quota.tree import AccountSpec, AccountTree
from quota.usage import DEFAULT_HALF_LIFE_S, decay_factor, decayed_usage

__all__ = [name for name in dir() if not name.startswith("_")]
