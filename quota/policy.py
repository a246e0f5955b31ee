"""decide(snapshot) -> Decision: admit, preempt, and say why everything else waits.

Phases (each a function below, in the order kueue's scheduler reads):
 1. account:   free slices per GPU after the running jobs; allocation per account.
 2. classify:  requests no node could ever hold wait as Infeasible; the rest is demand.
 3. entitle:   hierarchical weighted water-filling of capacity over demand.
 4. admit:     accounts take turns in `ordering` order; each turn admits the account's
               first queued request that fits its caps and a placement (backfill
               within the account). Work-conserving: when the phase ends, no waiting
               request both fits a placement and its caps.
 5. reclaim:   (if preemption is on) accounts below their protected level take slices
               back from accounts above their entitlement; see quota/preemption.py.
 6. explain:   a reason for every request left waiting.

Invariants: the result depends on the snapshot alone (same snapshot, same decision);
no GPU is given more slices than it has; no account or ancestor goes past its cap;
every admission is a placement Ray can start at once (quota/capacity.py).
Cost: O(n log a) in n pending requests and a accounts, plus the victims examined.
"""
from __future__ import annotations

import heapq
from operator import attrgetter
from typing import Mapping

from quota import fairshare
from quota.capacity import FreeSlices
from quota.entitlement import entitlements
from quota.ordering import EPS, AccountState, key_for, static_limits
from quota.preemption import reclaim
from quota.snapshot import (
    FRAGMENTATION,
    INFEASIBLE,
    PRIORITY,
    QUOTA_CAP,
    RESOURCES,
    Admission,
    Decision,
    PendingRequest,
    Snapshot,
    Waiting,
)
from quota.tree import AccountTree


class Ledger:
    """Slices allocated per account, rolled up the tree, with cap checks."""

    def __init__(self, tree: AccountTree, limits: Mapping[str, int] | None = None):
        self.tree = tree
        self.alloc = {name: 0 for name in tree.order}
        self.chains = {name: tree.ancestors(name) for name in tree.order}
        self.caps = {name: tree.accounts[name].cap for name in tree.order}
        if limits:  # static quotas: a leaf may not pass its static share
            for name, lim in limits.items():
                cap = self.caps[name]
                self.caps[name] = lim if cap is None else min(cap, lim)

    def add(self, account: str, slices: int) -> None:
        for name in self.chains[account]:
            self.alloc[name] += slices

    def cap_block(self, account: str, slices: int) -> str | None:
        """The account on the chain whose cap `slices` more would break, or None."""
        for name in self.chains[account]:
            cap = self.caps[name]
            if cap is not None and self.alloc[name] + slices > cap:
                return name
        return None


def decide(snap: Snapshot) -> Decision:
    cfg = snap.config
    tree = snap.tree
    free = FreeSlices(snap.capacity)
    total = snap.capacity.total_slices

    # 1. account for what runs
    ledger_running = []
    running_slices: dict[str, int] = {}
    for job in snap.running:
        if free.has_node(job.node):
            free.take(job.node, job.gpu_slices)
        if job.account in tree:
            ledger_running.append(job)
            running_slices[job.account] = running_slices.get(job.account, 0) + job.slices
    demand: dict[str, float] = {a: float(n) for a, n in running_slices.items()}

    # 2. classify
    waiting: dict = {}
    queues: dict[str, list[PendingRequest]] = {}
    shape_errors: dict[int, str | None] = {}
    leaves = {name for name in tree.order if tree.is_leaf(name)}
    pending_slices: dict[str, int] = {}
    for req in snap.pending:
        k = req.slices
        account = req.account
        if account not in leaves:
            why = f"account {account} does not exist" if account not in tree else (
                f"account {account} has sub-accounts; submit to one of them")
            waiting[req.id] = Waiting(req.id, account, INFEASIBLE, why)
            continue
        if k not in shape_errors:
            shape_errors[k] = snap.capacity.shape_error(k)
        if shape_errors[k] is not None:
            waiting[req.id] = Waiting(req.id, account, INFEASIBLE, shape_errors[k])
            continue
        q = queues.get(account)
        if q is None:
            queues[account] = q = []
            pending_slices[account] = 0
        q.append(req)
        pending_slices[account] += k
    for account, n in pending_slices.items():
        demand[account] = demand.get(account, 0.0) + n
    sizes = {k for k, err in shape_errors.items() if err is None}

    # 3. entitle
    entitled = entitlements(tree, total, demand)
    limits = None
    if cfg.ordering == "static":
        everyone = {leaf: float(total) for leaf in tree.leaves()}
        limits = static_limits(entitlements(tree, total, everyone))
    ledger = Ledger(tree, limits if cfg.ordering == "static" else None)
    if cfg.ordering == "fifo":
        ledger.caps = {name: None for name in tree.order}  # Ray alone knows no quotas
    for account, n in running_slices.items():
        ledger.add(account, n)
    factors = fairshare.compute(tree, snap.usage, cfg.algorithm).factor

    # 4. admit
    start_fits: dict[int, bool] = {}

    def fits_at_start(k: int) -> bool:
        if k not in start_fits:
            start_fits[k] = free.find(k) is not None
        return start_fits[k]

    for k in sizes:
        fits_at_start(k)

    states: dict[str, AccountState] = {}
    by_seq = attrgetter("seq")
    for name, q in queues.items():
        q.sort(key=by_seq)  # stable: equal seqs keep the snapshot's order
        states[name] = AccountState(
            name=name,
            entitled=entitled.get(name, 0.0),
            allocated=ledger.alloc[name],
            factor=factors[name],
            queue=q,
            pending_work=sum(r.slices * (r.work_s or 1.0) for r in q) if cfg.ordering == "finish-time" else 0.0,
        )
    active = max(1, len(states) + len({j.account for j in ledger_running} - set(states)))
    key = key_for(cfg.ordering, cfg.use_history, snap.now, total / active)
    admissions: list[Admission] = []
    admitted_ids: set = set()
    _admit_pass(states, key, ledger, free, sizes, admissions, admitted_ids)

    # 5. reclaim
    preemptions = []
    if cfg.preemption and cfg.ordering in ("fair-share", "static"):
        extra_adm, preemptions = reclaim(
            tree=tree,
            cfg=cfg,
            free=free,
            ledger=ledger,
            entitled=entitled,
            demand=demand,
            factors=factors,
            queues={name: s.queue for name, s in states.items()},
            admitted=admitted_ids,
            running=ledger_running,
        )
        admissions.extend(extra_adm)
        admitted_ids.update(a.request_id for a in extra_adm)
        if preemptions:  # victims may free more than their preemptors take: offer the rest
            for s in states.values():
                s.queue = [r for r in s.queue if r.id not in admitted_ids]
                s.pos = 0
                s.allocated = ledger.alloc[s.name]
            _admit_pass(states, key, ledger, free, sizes, admissions, admitted_ids)

    # 6. explain (one explanation per account and size: the state no longer changes)
    admitted_accounts = {a.account for a in admissions}
    explained: dict[tuple[str, int], tuple[str, str]] = {}
    for name, s in states.items():
        for req in s.queue:
            if req.id in admitted_ids:
                continue
            why = explained.get((name, req.slices))
            if why is None:
                others_took = start_fits[req.slices] and bool(admitted_accounts - {name})
                why = explained[(name, req.slices)] = _explain(name, req.slices, ledger, free, others_took)
            waiting[req.id] = Waiting(req.id, name, why[0], why[1])

    return Decision(
        admissions=tuple(admissions),
        preemptions=tuple(preemptions),
        waiting=waiting,
        entitled=entitled,
        allocated=dict(ledger.alloc),
        demand={n: d for n, d in demand.items()},
        factor=factors,
    )


def _admit_pass(states, key, ledger: Ledger, free: FreeSlices, sizes: set[int],
                admissions: list[Admission], admitted_ids: set) -> None:
    """Accounts take turns in key order; each turn admits the account's first request
    that fits its caps and a placement. Capacity only shrinks during a pass, so a size
    that failed once fails for the rest of it."""
    heap = [(key(s), s.name) for s in states.values() if s.pos < len(s.queue)]
    heapq.heapify(heap)
    cap_block = ledger.cap_block
    failed_k: set[int] = set()
    while heap and len(failed_k) < len(sizes):  # stop once no request size can fit anywhere
        _, name = heapq.heappop(heap)
        s = states[name]
        queue = s.queue
        while s.pos < len(queue):
            req = queue[s.pos]
            s.pos += 1
            k = req.slices
            if k in failed_k or cap_block(name, k):
                continue
            placement = free.find(k)
            if placement is None:
                failed_k.add(k)
                continue
            free.take(placement.node, placement.gpu_slices)
            ledger.add(name, k)
            s.allocated += k
            admissions.append(
                Admission(req.id, name, placement.node, placement.gpu_slices, placement.slices_per_gpu)
            )
            admitted_ids.add(req.id)
            if s.pos < len(queue):
                heapq.heappush(heap, (key(s), name))
            break


def _explain(account: str, k: int, ledger: Ledger, free: FreeSlices, others_took: bool) -> tuple[str, str]:
    """QuotaCap, then Fragmentation, then Priority (it fitted when the cycle began, and other
    accounts were admitted ahead of it), else Resources."""
    blocker = ledger.cap_block(account, k)
    if blocker is not None:
        cap = ledger.caps[blocker]
        return (QUOTA_CAP,
                f"account {blocker} is at its cap: {ledger.alloc[blocker]} of {cap} slices in use, {k} more asked")
    compatible = free.compatible_free(k)
    if compatible >= k:
        return (FRAGMENTATION, f"{compatible} slices are free, but not {k} on one GPU or whole GPUs on one node")
    if others_took:
        return (PRIORITY, "accounts ahead of this one in fair-share order took the free slices")
    return (RESOURCES, f"waiting for {k} slices; {compatible} free")
