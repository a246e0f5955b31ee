"""Per-account figures: the one owner of shares, usage, demand and entitlement per account.

    figures = quota.report(snapshot)            # the cluster as the snapshot has it
    figures = quota.report(snapshot, decision)  # ... and what the decision changes once applied
    by_name = {f.name: f for f in figures}

`report` returns one immutable `AccountFigures` per account of `snapshot.tree`, in tree
order (depth first, siblings by name). `fairgpu share`, the /metrics gauges, the
simulator's equity measures and the history report all read these figures; none computes
its own; `quota.cluster_equity(figures)` gives the cluster's equity measures from them.
(`quota.report` is this function: import the module's other names with
`from quota.report import AccountFigures, leaf_demand`.)

Invariants:
- Pure: a function of its arguments alone (no clock, no I/O), like the rest of quota.
- Slices and jobs are rolled up the tree: an account counts its own and its descendants'.
- `demand_slices` is what the policy water-fills: the running jobs' slices plus the
  slices of pending requests a node could ever hold (an Infeasible request is no
  demand), capped by each account's cap; it equals `decide(snapshot).demand` at the
  leaves. `entitled_slices` water-fills the snapshot's CURRENT capacity over it, so a
  node that leaves changes the entitlement everywhere the same way; it equals
  `decide(snapshot).entitled`.
- Without a decision, `allocated_*` equal `running_*` and `waiting` is empty. With one,
  they are the decision applied: the running jobs less the preempted plus the admitted
  (equal to `decision.allocated`), and the pending jobs left waiting, by reason.
- Usage and the fair-share factor are quota.fairshare's on the snapshot's decayed usage
  and algorithm (the factor equals `decision.factor`).
- `share_got` and `share_owed` are allocated and entitled slices as fractions of the
  capacity (0 with no capacity): `share_got - share_owed` is the share deviation.
Cost: O(accounts + pending + running), plus the decision's admissions, preemptions and
waiting requests.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from quota.entitlement import entitlements, subtree_demand
from quota.fairshare import compute as fair_share
from quota.snapshot import Decision, Snapshot


class AccountFigures(NamedTuple):
    """One account's figures, immutable. A NamedTuple (as quota.Waiting is) rather than a
    frozen dataclass: the simulator makes one per account at every share sample."""

    name: str
    parent: str | None  # None: an institution (top level)
    leaf: bool  # jobs are submitted to leaves only
    weight: float
    guaranteed_slices: int
    max_slices: int | None  # the cap; None: uncapped
    # fair share (Slurm's classic figures, or Fair Tree's factor)
    norm_shares: float  # S: the account's fraction of the tree's weight
    raw_usage: float  # decayed slice-seconds, rolled up
    norm_usage: float  # U: raw_usage / the tree's
    effective_usage: float  # U_E
    fairshare_factor: float  # F in [0, 1]; 1 = underserved
    # slices and jobs
    demand_slices: float  # what the entitlement water-fills (capped)
    entitled_slices: float  # owed now, from the snapshot's capacity
    running_slices: int  # held by the snapshot's running jobs
    running_jobs: int
    pending_slices: int  # asked by the snapshot's pending requests (Infeasible ones too)
    pending_jobs: int
    allocated_slices: int  # held once the decision is applied (= running_slices without one)
    allocated_jobs: int
    waiting: Mapping[str, int]  # reason -> jobs the decision leaves waiting ({} without a decision)
    share_got: float  # allocated_slices / capacity
    share_owed: float  # entitled_slices / capacity


def leaf_demand(snapshot: Snapshot) -> dict[str, float]:
    """Slices per account the policy counts as demand: running plus feasible pending (the
    same classification as decide's: a request to a leaf, of a size some node can hold)."""
    return _own(snapshot)[4]


def _own(snapshot: Snapshot):
    """Each account's own (not rolled up) running slices and jobs, pending slices and jobs,
    and demand. One pass over the jobs."""
    tree, capacity = snapshot.tree, snapshot.capacity
    accounts, children = tree.accounts, tree.children
    run_s: dict[str, int] = {}
    run_j: dict[str, int] = {}
    pend_s: dict[str, int] = {}
    pend_j: dict[str, int] = {}
    demand: dict[str, float] = {}
    for job in snapshot.running:
        a = job.account
        if a in accounts:
            k = job.slices
            run_s[a] = run_s.get(a, 0) + k
            run_j[a] = run_j.get(a, 0) + 1
            demand[a] = demand.get(a, 0.0) + k
    fits: dict[int, bool] = {}
    for req in snapshot.pending:
        a = req.account
        if a not in accounts:
            continue
        k = req.slices
        pend_s[a] = pend_s.get(a, 0) + k
        pend_j[a] = pend_j.get(a, 0) + 1
        if children.get(a):
            continue  # not a leaf: Infeasible
        ok = fits.get(k)
        if ok is None:
            ok = fits[k] = capacity.shape_error(k) is None
        if ok:
            demand[a] = demand.get(a, 0.0) + k
    return run_s, run_j, pend_s, pend_j, demand


def _rollup(tree, own: Mapping[str, int]) -> dict[str, int]:
    out = {name: own.get(name, 0) for name in tree.order}
    for name in reversed(tree.order):  # children come after their parents in `order`
        parent = tree.accounts[name].parent
        if parent is not None:
            out[parent] += out[name]
    return out


def report(snapshot: Snapshot, decision: Decision | None = None) -> tuple[AccountFigures, ...]:
    """Every account's figures, in tree order (see the module docstring for each one's meaning)."""
    tree = snapshot.tree
    total = snapshot.capacity.total_slices
    run_s, run_j, pend_s, pend_j, leaf = _own(snapshot)
    running_slices, running_jobs = _rollup(tree, run_s), _rollup(tree, run_j)
    pending_slices, pending_jobs = _rollup(tree, pend_s), _rollup(tree, pend_j)
    alloc_slices, alloc_jobs = running_slices, running_jobs
    waiting: dict[str, dict[str, int]] = {}
    if decision is not None:
        d_s, d_j = dict(run_s), dict(run_j)
        held = {j.id: j for j in snapshot.running} if decision.preemptions else {}
        changes = [(a.account, a.slices, 1) for a in decision.admissions]
        changes += [(held[p.job_id].account, -held[p.job_id].slices, -1)
                    for p in decision.preemptions if p.job_id in held]
        for account, n, jobs in changes:
            if account in tree:
                d_s[account] = d_s.get(account, 0) + n
                d_j[account] = d_j.get(account, 0) + jobs
        alloc_slices, alloc_jobs = _rollup(tree, d_s), _rollup(tree, d_j)
        own_waiting: dict[str, dict[str, int]] = {}
        for w in decision.waiting.values():
            if w.account in tree:
                mine = own_waiting.setdefault(w.account, {})
                mine[w.reason] = mine.get(w.reason, 0) + 1
        for name in reversed(tree.order):  # roll the counts up, as _rollup does
            mine_o = own_waiting.get(name)
            if mine_o:
                mine = mine_o
                waiting[name] = mine
                parent = tree.accounts[name].parent
                if parent is not None:
                    up = own_waiting.setdefault(parent, {})
                    for reason, n in mine.items():
                        up[reason] = up.get(reason, 0) + n

    demand = subtree_demand(tree, leaf)
    entitled = entitlements(tree, total, leaf)
    shares = fair_share(tree, snapshot.usage, snapshot.config.algorithm)
    scale = 1.0 / total if total > 0 else 0.0
    accounts, children = tree.accounts, tree.children
    out = []
    for name in tree.order:
        spec = accounts[name]
        out.append(AccountFigures(
            name=name, parent=spec.parent, leaf=not children.get(name), weight=spec.weight,
            guaranteed_slices=spec.guaranteed, max_slices=spec.cap,
            norm_shares=shares.norm_shares[name], raw_usage=shares.raw_usage[name],
            norm_usage=shares.norm_usage[name], effective_usage=shares.effective_usage[name],
            fairshare_factor=shares.factor[name],
            demand_slices=demand[name], entitled_slices=entitled[name],
            running_slices=running_slices[name], running_jobs=running_jobs[name],
            pending_slices=pending_slices[name], pending_jobs=pending_jobs[name],
            allocated_slices=alloc_slices[name], allocated_jobs=alloc_jobs[name], waiting=waiting.get(name, {}),
            share_got=alloc_slices[name] * scale, share_owed=entitled[name] * scale,
        ))
    return tuple(out)
