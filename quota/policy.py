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
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from operator import attrgetter

from quota import fairshare
from quota.capacity import Capacity, FreeSlices
from quota.entitlement import entitlements
from quota.lazy import Lazy, resolved
from quota.ordering import AccountState, key_for, static_limits
from quota.preemption import age_key, reclaim
from quota.snapshot import (
    FRAGMENTATION,
    INFEASIBLE,
    PRIORITY,
    QUOTA_CAP,
    RESOURCES,
    Admission,
    Decision,
    PendingRequest,
    Preemption,
    PolicyConfig,
    RunningJob,
    Snapshot,
    Waiting,
)
from quota.tree import AccountTree

NAN = math.nan


class Ledger:
    """Slices allocated per account, rolled up the tree, with cap checks."""

    def __init__(self, tree: AccountTree, limits: Mapping[str, int] | None = None,
                 chains: Mapping[str, list[str]] | None = None, caps: Mapping[str, int | None] | None = None):
        self.tree = tree
        self.alloc = dict.fromkeys(tree.order, 0)
        self.chains = chains if chains is not None else {name: tree.ancestors(name) for name in tree.order}
        if caps is not None:  # already merged with the limits by the caller (TreeCache)
            self.caps = dict(caps)
            return
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


class TreeCache:
    """What a cycle needs from the tree and capacity alone: computed once per (tree, capacity,
    config), so a caller that keeps one (quota.state.PolicyState) pays it once, not per cycle."""

    def __init__(self, tree: AccountTree, capacity: Capacity, cfg: PolicyConfig):
        self.tree = tree
        self.capacity = capacity
        self.total = capacity.total_slices
        self.leaves = frozenset(name for name in tree.order if tree.is_leaf(name))
        self.chains = {name: tree.ancestors(name) for name in tree.order}
        self.shares = fairshare.TreeShares.of(tree)
        self.algorithm = cfg.algorithm
        self.limits = None
        if cfg.ordering == "static":
            everyone = {leaf: float(self.total) for leaf in tree.leaves()}
            self.limits = static_limits(entitlements(tree, self.total, everyone))
        if cfg.ordering == "fifo":
            self.caps = dict.fromkeys(tree.order)  # Ray alone knows no quotas
        else:
            self.caps = Ledger(tree, self.limits, self.chains).caps
        self._shape_errors: dict[int, str | None] = {}
        self.guarantees = {name: tree.accounts[name].guaranteed for name in tree.order}  # reclaim's levels

    def shape_error(self, k: int) -> str | None:
        if k not in self._shape_errors:
            self._shape_errors[k] = self.capacity.shape_error(k)
        return self._shape_errors[k]

    def factors(self, usage: Mapping[str, float]) -> dict[str, float]:
        return fairshare.factors(self.tree, usage, self.algorithm, self.shares)

    def not_a_leaf(self, account: str) -> str | None:
        if account in self.leaves:
            return None
        if account not in self.tree:
            return f"account {account} does not exist"
        return f"account {account} has sub-accounts; submit to one of them"


def decide(snap: Snapshot) -> Decision:
    """The policy on one snapshot. Builds the cycle's state (the queues by seq and each
    account's running jobs by age: O(n log n)) and runs it."""
    cfg = snap.config
    tree = snap.tree
    cache = TreeCache(tree, snap.capacity, cfg)

    # 1. account for what runs (on a node re-declared smaller under its jobs, a GPU may hold
    #    more than it has: it is full, never refused; jobs on unknown nodes hold no GPU here)
    free = FreeSlices(snap.capacity, ((job.node, job.gpu_slices) for job in snap.running))
    running_of: dict[str, list[RunningJob]] = {}
    running_slices: dict[str, int] = {}
    for job in snap.running:
        if job.account in tree:
            running_of.setdefault(job.account, []).append(job)
            running_slices[job.account] = running_slices.get(job.account, 0) + job.slices
    for jobs in running_of.values():
        jobs.sort(key=age_key)  # youngest first: the order victims are considered in

    # 2. classify
    waiting: dict = {}
    queues: dict[str, list[PendingRequest]] = {}
    pending_slices: dict[str, int] = {}
    leaves = cache.leaves
    ok_sizes: set[int] = set()
    for req in snap.pending:
        k = req.slices
        account = req.account
        if account not in leaves or k not in ok_sizes:
            why = cache.not_a_leaf(account) or cache.shape_error(k)
            if why is not None:
                waiting[req.id] = Waiting(req.id, account, INFEASIBLE, why)
                continue
            ok_sizes.add(k)
        q = queues.get(account)
        if q is None:
            queues[account] = q = []
            pending_slices[account] = 0
        q.append(req)
        pending_slices[account] += k
    by_seq = attrgetter("seq")
    for q in queues.values():
        q.sort(key=by_seq)  # stable: equal seqs keep the snapshot's order
    active = running_of.keys() | queues.keys()
    return run_cycle(cache, cfg, snap.now, snap.usage, free, running_of, running_slices, queues,
                     pending_slices, waiting, len(active), queues_kept=True)


def run_cycle(cache: TreeCache, cfg: PolicyConfig, now: float, usage: Mapping[str, float] | None, free: FreeSlices,
              running_of: Mapping[str, Sequence[RunningJob]], running_slices: Mapping[str, int],
              queues: Mapping[str, list[PendingRequest]], pending_slices: Mapping[str, int],
              waiting: dict, n_active: int, *, pending_work: Mapping[str, float] | None = None, size_sets: Mapping[str, Collection[int]] | None = None,
              factors: Mapping[str, float] | None = None, explain: bool = True,
              queues_kept: bool = False, alloc: Mapping[str, int] | None = None) -> Decision:
    """Phases 3-6 on a cycle's state. Shared by `decide` and quota.state.PolicyState, so both
    paths run the same policy code.

    Inputs: `free` already holds the running jobs (it is updated with this decision's
    preemptions and admissions); `running_of` the running jobs of the tree's accounts, per
    account that has any, youngest first (`quota.preemption.age_key`); `queues` per leaf
    account, sorted by seq, non-empty, never mutated; `waiting` holds the Infeasible
    requests (filled with the rest if `explain`). `pending_work` (finish-time ordering) and
    `size_sets` (the request sizes in each queue) may be passed by a caller that keeps them
    between cycles, and `factors` (cache.factors(usage)) by one that computed them for the
    same usage already; otherwise they are computed here; `alloc` is `running_slices` rolled
    up the tree (every account of it), by one that keeps it. `queues_kept`: the caller never
    changes those lists in place afterwards (decide's are its own; PolicyState copies a
    list it lent before changing it), so the explanation keeps them without a copy."""
    tree = cache.tree
    total = cache.total
    demand: dict[str, float] = {a: float(n) for a, n in running_slices.items()}
    for account, n in pending_slices.items():
        demand[account] = demand.get(account, 0.0) + n

    # 3. entitle (when first read: see 4)
    entitled = Lazy(lambda: entitlements(tree, total, demand))
    ledger = Ledger(tree, chains=cache.chains, caps=cache.caps)
    if alloc is not None:
        ledger.alloc = dict(alloc)
    else:
        for account, n in running_slices.items():
            ledger.add(account, n)
    if factors is None:
        factors = cache.factors(usage)  # type: ignore[arg-type]

    # 4. admit. Only the accounts that can be admitted at all when a pass starts take turns
    #    (_admit_pass); with one of them, the turn order is that account whatever the keys
    #    say, so the states carry no entitlement or factor (NaN) and no key is made. Both
    #    figures are filled in (`keyed`) only when two or more accounts take turns, and
    #    otherwise computed only if reclaim or a reader of the decision asks.
    states: dict[str, AccountState] = {}
    finish_time = cfg.ordering == "finish-time"
    for name, q in queues.items():
        work = 0.0
        if finish_time:
            work = pending_work[name] if pending_work is not None else _pending_work(q)
        states[name] = AccountState(name=name, entitled=NAN, allocated=ledger.alloc[name], factor=NAN, queue=q,
                                    pending_work=work, guaranteed=tree.accounts[name].guaranteed)
    if size_sets is None:
        size_sets = {name: {r.slices for r in q} for name, q in queues.items()}
    start_fits = {k: free.find(k) is not None for k in _all_sizes(size_sets)} if explain else {}  # for 6
    ordered_key = key_for(cfg.ordering, cfg.use_history, now, total / max(1, n_active))
    filled = False

    def keyed() -> Callable[[AccountState], tuple]:
        nonlocal filled
        if not filled:
            ent, fac = entitled.value, resolved(factors)
            for name, st in states.items():
                st.entitled, st.factor = ent.get(name, 0.0), fac[name]
            filled = True
        return ordered_key

    admissions: list[Admission] = []
    admitted_ids: set = set()
    _admit_pass(states, keyed, ledger, free, size_sets, admissions, admitted_ids)

    # 5. reclaim
    preemptions: list[Preemption] = []
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
            per_account=running_of,
            levels=cache.guarantees if cfg.reclaim == "guarantee" else None,
            size_sets=size_sets,
        )
        admissions.extend(extra_adm)
        admitted_ids.update(a.request_id for a in extra_adm)
        if preemptions:  # victims may free more than their preemptors take: offer the rest
            for s in states.values():
                s.queue = [r for r in s.queue if r.id not in admitted_ids]
                s.pos = 0
                s.allocated = ledger.alloc[s.name]
            size_sets = {name: {r.slices for r in s.queue} for name, s in states.items()}
            _admit_pass(states, keyed, ledger, free, size_sets, admissions, admitted_ids)

    # 6. explain (one explanation per account and size: the state no longer changes)
    if explain:
        admitted_accounts = {a.account for a in admissions}
        reasons: dict[tuple[str, int], tuple[str, str]] = {}
        for name, s in states.items():
            for k in size_sets[name]:
                others_took = start_fits.get(k, False) and bool(admitted_accounts - {name})
                reasons[(name, k)] = _explain(name, k, ledger, free, others_took)
        kept = [(name, s.queue if queues_kept else list(s.queue)) for name, s in states.items()]
        waiting_out: Mapping = Explained(waiting, kept, admitted_ids, reasons)
    else:
        waiting_out = waiting

    return Decision(
        admissions=tuple(admissions),
        preemptions=tuple(preemptions),
        waiting=waiting_out,
        entitled=entitled,
        allocated=dict(ledger.alloc),
        demand=demand,
        factor=factors,
    )


class Explained(Mapping):
    """`Decision.waiting` of a cycle that explains: {request id: Waiting} for every request
    left waiting, built on first read.

    Once the decision is made a request's reason depends only on its account and size, so
    the cycle computes `reasons[(account, slices)]` (accounts x sizes) and keeps the queues;
    the per-request tuples (one per waiting job: most of a large queue's cost) are made only
    if someone reads them. `explicit` holds the Infeasible ones, which have their own
    messages. Equal to the plain dict it stands for (Mapping equality)."""

    def __init__(self, explicit: dict, queues: list[tuple[str, list[PendingRequest]]], admitted: set,
                 reasons: dict[tuple[str, int], tuple[str, str]]):
        self.explicit = explicit
        self.reasons = reasons
        self._queues = queues  # never changed after the cycle (copies, or lists run_cycle was told are kept)
        self._admitted = admitted
        self._all: dict | None = None

    def _built(self) -> dict:
        if self._all is None:
            out = dict(self.explicit)
            make, reasons, admitted = tuple.__new__, self.reasons, self._admitted
            for name, q in self._queues:
                for req in q:
                    rid = req.id
                    if rid not in admitted:
                        why = reasons[(name, req.slices)]
                        out[rid] = make(Waiting, (rid, name, why[0], why[1]))
            self._all, self._queues = out, []
        return self._all

    def __getitem__(self, request_id):
        return self._built()[request_id]

    def __iter__(self):
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())

    def __contains__(self, request_id) -> bool:
        return request_id in self._built()

    def get(self, request_id, default=None):
        return self._built().get(request_id, default)

    def keys(self):
        return self._built().keys()

    def values(self):
        return self._built().values()

    def items(self):
        return self._built().items()

    def __repr__(self) -> str:
        return f"Explained({self._built()!r})"


def _lone_key(s: AccountState) -> int:
    return 0  # the only account in the turn order


def _pending_work(q: Sequence[PendingRequest]) -> float:
    return sum(r.slices * (r.work_s or 1.0) for r in q)


def _all_sizes(size_sets: Mapping[str, Collection[int]]) -> set[int]:
    out: set[int] = set()
    for s in size_sets.values():
        out.update(s)
    return out


def _admit_pass(states, keyed: Callable[[], Callable[[AccountState], tuple]], ledger: Ledger, free: FreeSlices,
                size_sets: Mapping[str, Collection[int]], admissions: list[Admission], admitted_ids: set) -> None:
    """Accounts take turns in key order; each turn admits the account's first request
    that fits its caps and a placement. Capacity only shrinks and allocations only grow
    during a pass, so a size that does not fit (or is over a cap) once stays so for the
    rest of it: sizes that fit nowhere when the pass starts are failed from the start, and
    an account none of whose sizes can pass never takes a turn (it is left out of the turn
    order rather than popped and skipped). Both shortcuts skip only requests the walk would
    have skipped, so admissions are the same. `keyed()` gives the key function (making the
    states' figures it reads); it is asked for only when two or more accounts take turns:
    with one, every order is that account's."""
    all_sizes = _all_sizes(size_sets)
    failed_k: set[int] = {k for k in all_sizes if free.find(k) is None}
    if len(failed_k) == len(all_sizes):
        return  # nothing fits anywhere: no turn would admit
    cap_block = ledger.cap_block
    turns = [s for s in states.values()
             if s.pos < len(s.queue) and not all(k in failed_k or cap_block(s.name, k) for k in size_sets[s.name])]
    key = keyed() if len(turns) > 1 else _lone_key
    heap = [(key(s), s.name) for s in turns]
    heapq.heapify(heap)
    while heap and len(failed_k) < len(all_sizes):  # stop once no request size can fit anywhere
        _, name = heapq.heappop(heap)
        s = states[name]
        if all(k in failed_k or cap_block(name, k) for k in size_sets[name]):
            continue  # nothing in this queue can be admitted for the rest of the pass
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
