"""PolicyState: the policy's inputs kept across cycles, so a cycle costs what changed.

`quota.decide(snapshot)` rebuilds everything from a snapshot each call: the free-slice
tracker (O(GPUs)), the ledger (O(running)), the sorted queues (O(pending log pending)).
A caller that runs thousands of cycles on one cluster (the simulator; the live scheduler
if it wants) keeps a PolicyState instead and tells it only what changed:

    state = PolicyState(tree, capacity, config)
    state.submit(request)            # a new request joins its account's queue
    state.finish(job_id)             # a running job ended; its slices are free again
    if state.could_act():            # False only when the decision is provably empty
        decision = state.cycle(now, usage)   # decide AND apply: admitted jobs run,
                                             # victims go back to their place in their queue

Invariants:
- `cycle(now, usage)` returns exactly what `decide(state.snapshot(now, usage))` returns
  when called just before it (tests/quota/test_state_equivalence.py checks this on random
  sequences), because both run `quota.policy.run_cycle`, the same policy code, on the same
  inputs. With `explain=False` it leaves `waiting` empty and is otherwise the same.
- After `cycle`, the state is the decision applied: preempted jobs are pending again
  (as `requeue` gives them back; by default with the seq they were submitted with, so
  in their original place: victims of one cycle keep their submission order, as the
  live scheduler's requeued jobs do) and admitted requests run where the decision
  placed them, started at `now`.
- `could_act()` is False only if no queued request both fits a free placement and fits
  every cap on its account's chain (so the admit passes cannot admit: within a pass
  capacity only shrinks and allocations only grow) and no account could reclaim (none
  is below min(protected level, demand) with requests queued of a size its own cap still
  allows). Then the decision has no admissions and no preemptions, and skipping the cycle
  changes nothing.
- `ties_by_id=True` orders equal seqs by request id (ids must be comparable), as
  `decide` does on a snapshot listed in id order (the live loop's); by default, by arrival.
Pure like the rest of quota: no clock (`now` is passed in), no I/O.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Mapping

from quota.capacity import Capacity, FreeSlices
from quota.lazy import Lazy, resolved
from quota.policy import TreeCache, _pending_work, run_cycle
from quota.preemption import age_key
from quota.snapshot import (
    INFEASIBLE,
    Admission,
    Decision,
    JobId,
    PendingRequest,
    PolicyConfig,
    RunningJob,
    Snapshot,
    Waiting,
)
from quota.tree import AccountTree

Requeue = Callable[[PendingRequest, RunningJob, float], PendingRequest]


def keep_place(request: PendingRequest, job: RunningJob, now: float) -> PendingRequest:
    """Default requeue: the victim goes back as it was submitted, to its original place in
    its account's queue (its seq)."""
    return request


def _room(cap: int | None, alloc: int, k: int) -> bool:
    return cap is None or alloc + k <= cap


class PolicyState:
    def __init__(self, tree: AccountTree, capacity: Capacity, config: PolicyConfig | None = None,
                 requeue: Requeue = keep_place, ties_by_id: bool = False):
        self.config = config or PolicyConfig()
        self.cache = TreeCache(tree, capacity, self.config)
        self.tree = tree
        self.capacity = capacity
        self.requeue = requeue
        self.free = FreeSlices(capacity)
        self.running: dict[JobId, RunningJob] = {}
        self.request_of: dict[JobId, PendingRequest] = {}  # what to requeue a running job as
        self.running_slices: dict[str, int] = {}
        self.alloc: dict[str, int] = dict.fromkeys(tree.order, 0)  # running slices rolled up the tree
        self.running_count: dict[str, int] = {}
        self._running_of: dict[str, list[RunningJob]] = {}  # per account with jobs, youngest first
        self._age_keys_of: dict[str, list[tuple[float, str]]] = {}  # their age_keys, in step
        self.queues: dict[str, list[PendingRequest]] = {}  # per leaf, sorted by (seq, arrival or id)
        self._keys: dict[str, list[tuple[float, object]]] = {}
        self._key_of: dict[JobId, tuple[float, object]] = {}  # queued request -> its key (cancel bisects)
        self.ties_by_id = ties_by_id  # equal seqs in id order, as decide() on an id-ordered snapshot
        self._arrival = 0
        self.pending_slices: dict[str, int] = {}
        self.sizes: Counter[int] = Counter()
        self._sizes_of: dict[str, Counter[int]] = {}
        self.infeasible: dict[JobId, Waiting] = {}
        self._infeasible_reqs: dict[JobId, PendingRequest] = {}
        self._work: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._lent: set[str] = set()  # accounts whose queue list the last decision keeps: copy before changing
        self._usage: Mapping[str, float] = {}
        self._factors: Mapping[str, float] = self.cache.factors(self._usage)
        guaranteed = ((a, tree.accounts[a].guaranteed) for a in self.cache.leaves)
        self._guaranteed = [(a, g) for a, g in guaranteed if g > 0]

    # -- changes ----------------------------------------------------------------------
    def submit(self, req: PendingRequest) -> None:
        why = self.cache.not_a_leaf(req.account) or self.cache.shape_error(req.slices)
        if why is not None:
            self.infeasible[req.id] = Waiting(req.id, req.account, INFEASIBLE, why)
            self._infeasible_reqs[req.id] = req
            return
        a = req.account
        keys = self._keys.get(a)
        if keys is None:
            keys = self._keys[a] = []
            self.queues[a] = []
        key = (req.seq, req.id if self.ties_by_id else self._arrival)
        self._arrival += 1
        self._key_of[req.id] = key
        i = bisect_left(keys, key)
        keys.insert(i, key)
        self._queue(a).insert(i, req)
        self.pending_slices[a] = self.pending_slices.get(a, 0) + req.slices
        self.sizes[req.slices] += 1
        self._sizes_of.setdefault(a, Counter())[req.slices] += 1
        self._dirty.add(a)

    def add_running(self, job: RunningJob, request: PendingRequest | None = None) -> None:
        """A job already running when the state is built (its request is what a preemption requeues)."""
        self.free.hold(job.node, job.gpu_slices)  # never refused, as in decide (quota.capacity._Pool)
        self._track(job, request or PendingRequest(job.id, job.account, job.slices, seq=job.started_at,
                                                   submitted_at=job.started_at))

    def finish(self, job_id: JobId) -> RunningJob:
        job = self._untrack(job_id)
        self.request_of.pop(job_id, None)
        if self.free.has_node(job.node):
            self.free.give(job.node, job.gpu_slices)
        return job

    def cancel(self, request_id: JobId, account: str) -> bool:
        """Withdraw a pending request; False if it is not queued."""
        if self.infeasible.pop(request_id, None) is not None:
            del self._infeasible_reqs[request_id]
            return True
        key = self._key_of.get(request_id)
        q = self.queues.get(account)
        if key is None or q is None:
            return False
        i = bisect_left(self._keys[account], key)
        if i < len(q) and q[i].id == request_id:
            self._drop(account, {i})
            return True
        return False

    # -- the cycle --------------------------------------------------------------------
    def could_act(self) -> bool:
        if not self.queues:
            return False
        find = self.free.find
        fits = [k for k in self.sizes if find(k) is not None]
        if fits:
            caps, chains, alloc_d = self.cache.caps, self.cache.chains, self.alloc
            for a, sizes in self._sizes_of.items():
                for k in fits:
                    if k in sizes and all(_room(caps[x], alloc_d[x], k) for x in chains[a]):
                        return True
        cfg = self.config
        if not cfg.preemption or cfg.ordering not in ("fair-share", "static"):
            return False
        if cfg.reclaim != "guarantee":
            return True  # the protected level is the entitlement: let the cycle decide
        caps = self.cache.caps
        for a, g in self._guaranteed:
            if a in self.queues:
                alloc = self.running_slices.get(a, 0)
                if alloc < min(g, alloc + self.pending_slices[a]):
                    # a preemptor whose own cap (or static share) refuses every size it
                    # waits for reclaims nothing: quota.preemption fails those sizes at once
                    cap = caps[a]
                    if cap is None or any(alloc + k <= cap for k in self._sizes_of[a]):
                        return True
        return False

    def set_usage(self, usage: Mapping[str, float]) -> None:
        """Record decayed usage (own slice-seconds per leaf) for the cycles that follow; the
        fair-share factors are computed from it once, not in every cycle, and only when a
        cycle first reads them. A `quota.lazy.Lazy` usage is kept as it is (it is immutable)."""
        u = self._usage = usage if isinstance(usage, Lazy) else dict(usage)
        factors = self.cache.factors
        self._factors = Lazy(lambda: factors(resolved(u)))

    def cycle(self, now: float, usage: Mapping[str, float] | None = None, explain: bool = True) -> Decision:
        """Decide and apply. `usage` given: as set_usage(usage) first; None: the last usage set
        (the live loop, too, charges usage on its own period, not every cycle)."""
        if usage is not None:
            self.set_usage(usage)
        if self.config.ordering == "finish-time":
            for a in self._dirty:
                if a in self.queues:
                    self._work[a] = _pending_work(self.queues[a])
        self._dirty.clear()
        n_active = len(self.running_count.keys() | self.queues.keys())
        decision = run_cycle(
            self.cache, self.config, now, usage, self.free, self._running_of, self.running_slices, self.queues,
            self.pending_slices, dict(self.infeasible) if explain else {}, n_active,
            pending_work=self._work, explain=explain,
            size_sets={a: c.keys() for a, c in self._sizes_of.items()}, factors=self._factors, queues_kept=True,
            alloc=self.alloc,
        )
        if explain:  # decision.waiting keeps the queue lists themselves (copy-on-write, see _queue)
            self._lent = set(self.queues)
        self._apply(decision, now)
        return decision

    def _apply(self, d: Decision, now: float) -> None:
        """Book the decision; `free` already holds it (run_cycle placed and released on it)."""
        for p in d.preemptions:
            job = self._untrack(p.job_id)
            req = self.request_of.pop(p.job_id)
            self.submit(self.requeue(req, job, now))
        if not d.admissions:
            return
        by_account: dict[str, dict[JobId, Admission]] = {}
        for adm in d.admissions:
            by_account.setdefault(adm.account, {})[adm.request_id] = adm
        for a, adms in by_account.items():
            q = self.queues[a]
            keys, key_of = self._keys[a], self._key_of
            idx = {bisect_left(keys, key_of[rid]) for rid in adms}  # keys are unique: O(log n) each
            reqs = [q[i] for i in sorted(idx)]
            self._drop(a, idx)
            for req in reqs:
                adm = adms[req.id]
                self._track(RunningJob(req.id, a, adm.node, adm.gpu_slices, now), req)

    # -- bookkeeping ------------------------------------------------------------------
    def _queue(self, a: str) -> list[PendingRequest]:
        """Account a's queue, to change in place: a copy first if the last decision keeps it."""
        q = self.queues[a]
        if a in self._lent:
            self._lent.discard(a)
            q = self.queues[a] = list(q)
        return q

    def _drop(self, a: str, idx: set[int]) -> None:
        q, keys = self._queue(a), self._keys[a]
        mine = self._sizes_of[a]
        key_of = self._key_of
        for i in idx:
            key_of.pop(q[i].id, None)
            k = q[i].slices
            self.pending_slices[a] -= k
            self.sizes[k] -= 1
            if not self.sizes[k]:
                del self.sizes[k]
            mine[k] -= 1
            if not mine[k]:
                del mine[k]
        for i in sorted(idx, reverse=True):  # a few deletions near the head: memmoves, not a rebuild
            del q[i], keys[i]
        self._dirty.add(a)
        if not q:
            del self.queues[a], self._keys[a], self.pending_slices[a], self._sizes_of[a]
            self._lent.discard(a)
            self._work.pop(a, None)

    def _track(self, job: RunningJob, request: PendingRequest) -> None:
        if job.id in self.running:
            raise ValueError(f"job {job.id!r} is already running")
        self.running[job.id] = job
        self.request_of[job.id] = request
        a = job.account
        if a in self.tree:
            self.running_slices[a] = self.running_slices.get(a, 0) + job.slices
            self.running_count[a] = self.running_count.get(a, 0) + 1
            for x in self.cache.chains[a]:
                self.alloc[x] += job.slices
            k = age_key(job)
            keys = self._age_keys_of.setdefault(a, [])
            jobs = self._running_of.setdefault(a, [])
            i = bisect_left(keys, k)
            keys.insert(i, k)
            jobs.insert(i, job)

    def _untrack(self, job_id: JobId) -> RunningJob:
        job = self.running.pop(job_id)
        a = job.account
        if a in self.tree:
            self.running_slices[a] -= job.slices
            self.running_count[a] -= 1
            for x in self.cache.chains[a]:
                self.alloc[x] -= job.slices
            if not self.running_count[a]:
                del self.running_count[a], self.running_slices[a]
            keys, jobs = self._age_keys_of[a], self._running_of[a]
            if len(keys) == 1:
                del self._age_keys_of[a], self._running_of[a]
            else:
                i = bisect_left(keys, age_key(job))
                del keys[i], jobs[i]
        return job

    # -- views ------------------------------------------------------------------------
    def is_queued(self, request_id: JobId) -> bool:
        return request_id in self._key_of or request_id in self.infeasible

    @property
    def pending(self) -> list[PendingRequest]:
        return [r for q in self.queues.values() for r in q]

    @property
    def waiting(self) -> tuple[PendingRequest, ...]:
        """Every pending request, the infeasible ones first (as `snapshot` lists them)."""
        return tuple(self._infeasible_reqs.values()) + tuple(self.pending)

    def snapshot(self, now: float, usage: Mapping[str, float] | None = None) -> Snapshot:
        """The equivalent snapshot: `decide(state.snapshot(now, usage)) == state.cycle(now, usage)`."""
        usage = self._usage if usage is None else usage
        pending = self.waiting
        return Snapshot(self.tree, self.capacity, pending, tuple(self.running.values()),
                        dict(usage), now, self.config)
