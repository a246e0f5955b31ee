"""Reclaim: accounts below their protected level take slices back from accounts above
their entitlement. Chosen on the snapshot alone; the scheduler carries it out.

Rules (PolicyConfig.reclaim picks the protected level L):
- "guarantee" (default): L_a = the account's guaranteed slices;
  "entitlement": L_a = floor(entitled slices), i.e. reclaim up to the fair share.
- A preemptor P may reclaim for a waiting request of k slices only while
  alloc_P < min(L_P, demand_P), and only if alloc_P + k <= entitled_P and no cap breaks.
- A victim job's account V must be above its entitlement (alloc_V > entitled_V), and
  stays at or above its own protected level after the preemption: alloc_V - s >= L_V.
  (In guarantee mode this is "a victim is never taken below its own guarantee".)
- Victims come from the account furthest above its entitlement first (the highest
  alloc / entitled, recomputed as victims are taken), the youngest job first within it,
  as Kueue's fair-sharing preemption does; once a set frees a placement, victims on
  other nodes are dropped and then each remaining one, oldest first, is spared if the
  request still fits without it.

Why two accounts cannot keep preempting each other. Take the potential
Phi = sum over accounts of min(alloc_a, L_a). Entitlements and L depend only on the
accounts' demand (running + waiting slices), which preemption does not change: a
victim goes back to the queue. A reclaim raises P's term by min(k, L_P - alloc_P) >= 1,
since alloc_P < L_P before. It leaves every victim's term unchanged, since
alloc_V >= L_V after. Other terms do not move. So each reclaim raises Phi by at least 1,
and Phi <= sum(L_a) <= capacity. Between two changes of demand (a submission or a job
ending) there are therefore at most `capacity` reclaims: no endless cycle. Admissions
without preemption never lower Phi either. tests/quota/test_preemption.py replays
decisions cycle after cycle and checks that preemption stops.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence

from quota.capacity import FreeSlices
from quota.lazy import resolved
from quota.ordering import EPS
from quota.snapshot import (
    RECLAIM_FAIR_SHARE,
    RECLAIM_GUARANTEE,
    Admission,
    PendingRequest,
    PolicyConfig,
    Preemption,
    RunningJob,
)
from quota.tree import AccountTree


def protected_levels(tree: AccountTree, cfg: PolicyConfig, entitled: Mapping[str, float]) -> dict[str, int]:
    if cfg.reclaim == "guarantee":
        return {a: tree.accounts[a].guaranteed for a in tree.order}
    return {a: int(entitled.get(a, 0.0) + EPS) for a in tree.order}


def reclaim(
    *,
    tree: AccountTree,
    cfg: PolicyConfig,
    free: FreeSlices,
    ledger,
    entitled: Mapping[str, float],
    demand: Mapping[str, float],
    factors: Mapping[str, float],
    queues: Mapping[str, Sequence[PendingRequest]],
    admitted: set,
    per_account: Mapping[str, Sequence[RunningJob]],
    levels: Mapping[str, int] | None = None,
    size_sets: Mapping[str, Collection[int]] | None = None,
) -> tuple[list[Admission], list[Preemption]]:
    """`per_account`: the running jobs per account that has any, youngest first (`age_key`).
    `levels`: protected_levels(tree, cfg, entitled), if the caller keeps it (guarantee mode:
    it depends on the tree alone). `size_sets`: the request sizes in each queue; with them
    a preemptor's walk stops once every size it has is known to fail (below)."""
    level = protected_levels(tree, cfg, entitled) if levels is None else levels

    def below(a: str) -> bool:
        return ledger.alloc[a] < min(level[a], demand.get(a, 0.0))

    def leftovers(a: str):
        return (r for r in queues[a] if r.id not in admitted)

    preemptors = [a for a in queues if below(a) and next(leftovers(a), None) is not None]
    if not preemptors:
        return [], []
    entitled, factors = resolved(entitled), resolved(factors)  # plain dicts in the loops below
    preemptors.sort(key=lambda a: (ledger.alloc[a] / max(entitled.get(a, 0.0), EPS), -factors[a], a))
    gone: set = set()
    admissions: list[Admission] = []
    preemptions: list[Preemption] = []
    no_victims: set[tuple[str, int]] = set()  # (preemptor, size) that found none since the last reclaim
    reach: _Reach | None = None  # what every donor together could free; made again after a reclaim
    for p in preemptors:
        # Sizes of p that fail for the rest of p's turn: over p's entitlement or p's own cap
        # (p's allocation only grows in its turn; entitlements and caps are fixed), or with
        # no victims (until a reclaim succeeds, which clears no_victims). Once every size p
        # has is in one of them, the rest of p's queue would only be skipped one by one.
        dead: set[int] = set()
        sizes = size_sets.get(p) if size_sets is not None else None
        for req in leftovers(p):
            if not below(p):
                break
            k = req.slices
            if k in dead:
                continue
            if ledger.alloc[p] + k > entitled.get(p, 0.0) + EPS:
                dead.add(k)
                if sizes is not None and _all_fail(sizes, dead, no_victims, p):
                    break
                continue
            if (p, k) in no_victims:
                continue  # nothing changed since the same search failed: it would fail again
            relief, within = _cap_relief(tree, ledger, p, k)
            if relief is None:
                dead.add(k)
                if sizes is not None and _all_fail(sizes, dead, no_victims, p):
                    break
                continue
            if reach is None:
                wanted = set().union(*(size_sets[a] for a in preemptors)) if size_sets is not None else set()
                reach = _Reach(per_account, gone, free, ledger, entitled, level, wanted)
            if not reach.may_place(p, k):
                victims = None  # even every job a search could choose frees no placement
            else:
                victims = _choose_victims(k, p, per_account, gone, free, ledger, entitled, level, cfg.max_victim_scan,
                                          relief, within)
            if victims is None:
                no_victims.add((p, k))
                if sizes is not None and _all_fail(sizes, dead, no_victims, p):
                    break
                continue
            no_victims.clear()
            reach = None
            for v in victims:
                free.give(v.node, v.gpu_slices)
                ledger.add(v.account, -v.slices)
                gone.add(v.id)
            placement = free.find(k)
            assert placement is not None, "victims were chosen to free a placement"
            free.take(placement.node, placement.gpu_slices)
            ledger.add(p, k)
            if cfg.reclaim == "guarantee":
                what, kind = "guarantee", RECLAIM_GUARANTEE
            else:
                what, kind = "fair share", RECLAIM_FAIR_SHARE
            why = f"reclaim: {p} is below its {what} of {level[p]} slices"
            for v in victims:
                preemptions.append(Preemption(v.id, v.account, req.id, p, why, kind))
            admissions.append(
                Admission(req.id, p, placement.node, placement.gpu_slices, placement.slices_per_gpu,
                          preempts=tuple(v.id for v in victims))
            )
    return admissions, preemptions


class _Reach:
    """The jobs a victim search could choose at most, and the sizes their release could place.

    `_choose_victims` walks each account's jobs youngest first and takes a job only while
    the account stays above its entitlement before the take and at or above its protected
    level after it; whether it takes a job depends on that account's own earlier takes
    alone. So the jobs it chooses from account v are always a prefix-walk subset of
    `greedy(v)`: the jobs that same walk takes when nothing stops it (no placement found
    yet, no scan limit). Freeing slices never removes a placement (`find` is monotone in
    the free slices), so if releasing every greedy(v), v != p, places no request of k
    slices, no search by p for k can succeed, and it is failed without being made.

    Valid while `gone`, `free` and the ledger do not change: the caller makes a new one
    after each reclaim. A preemptor that is itself a donor (possible only when guarantees
    were scaled down) is never failed here: its own jobs are not its victims."""

    def __init__(self, per_account, gone, free, ledger, entitled, level, sizes):
        self.free = free
        self.donors: set[str] = set()
        self.jobs: list[RunningJob] = []
        alloc, has_node = ledger.alloc, free.has_node
        for v, jobs in per_account.items():
            left = alloc[v]
            ent_v = entitled.get(v, 0.0) + EPS
            if left <= ent_v:
                continue
            lvl_v = level[v]
            for job in jobs:
                if left <= ent_v:
                    break
                if job.id in gone or not has_node(job.node) or left - job.slices < lvl_v:
                    continue
                left -= job.slices
                self.jobs.append(job)
                self.donors.add(v)
        self.fits: dict[int, bool] = {}
        self._place(sizes)

    def _place(self, sizes) -> None:
        fit = self.free.fit_after_release(sizes, ((job.node, job.gpu_slices) for job in self.jobs))
        for k in sizes:
            self.fits[k] = k in fit

    def may_place(self, p: str, k: int) -> bool:
        if p in self.donors:
            return True  # not judged here: the search decides
        if not self.jobs:
            return False  # a search chooses nothing, so it finds no placement
        if k not in self.fits:
            self._place((k,))
        return self.fits[k]


def _all_fail(sizes: Collection[int], dead: set[int], no_victims: set[tuple[str, int]], p: str) -> bool:
    return all(k in dead or (p, k) in no_victims for k in sizes)


def age_key(job: RunningJob) -> tuple[float, str]:
    """Youngest first: the order victims are considered in."""
    return (-job.started_at, str(job.id))


def _cap_relief(tree: AccountTree, ledger, p: str, k: int) -> tuple[int | None, set | None]:
    """Slices that must be freed inside a capped ancestor's subtree for k more to fit its cap.

    Returns (0, None) when no cap binds, (None, None) when the preemptor's own cap binds
    (nothing to reclaim), else (relief, accounts whose jobs can give that relief)."""
    blockers = [a for a in ledger.chains[p] if ledger.caps[a] is not None and ledger.alloc[a] + k > ledger.caps[a]]
    if not blockers:
        return 0, None
    if blockers[0] == p:
        return None, None
    relief = max(ledger.alloc[a] + k - ledger.caps[a] for a in blockers)
    return relief, set(tree.subtree(blockers[0]))  # the deepest blocker: nested in all others


def _choose_victims(k, preemptor, per_account, gone, free, ledger, entitled, level, max_scan, relief=0,
                    within=None):
    """Victims for a request of k slices, or None. The chosen jobs are released on `free`
    while the choice is made (one give per candidate and one find, instead of releasing
    the whole set again for every candidate) and taken back before returning, so `free`
    is unchanged and each find sees exactly the set being tried.

    Candidates come in this order: the account furthest above its entitlement first, by
    its share after the victims already chosen (so taking from it may hand the lead to
    another), the youngest job first within it; ties by name. An account's share moves
    only when one of its jobs is chosen, so after a job is passed over the same account
    still leads: its jobs are walked in a row, and the accounts' heap is consulted again
    only after a choice (the order is exactly one heap step per job, without the steps)."""
    chosen: list[RunningJob] = []
    removed: dict[str, int] = defaultdict(int)
    placement = None
    scanned = 0
    inside = 0  # slices of the chosen jobs that count toward the relief
    alloc = ledger.alloc
    has_node = free.has_node

    def counts(job: RunningJob) -> int:
        return job.slices if within is None or job.account in within else 0

    def over(a: str) -> float:
        return (alloc[a] - removed[a]) / max(entitled.get(a, 0.0), EPS)

    heap = [(-over(a), a, 0) for a in per_account if a != preemptor]
    heapq.heapify(heap)
    try:
        done = False
        while heap and not done:
            _, v, i = heapq.heappop(heap)
            jobs = per_account[v]
            n = len(jobs)
            ent_v = entitled.get(v, 0.0) + EPS
            lvl_v = level[v]
            outside = relief and v not in within
            while i < n:
                job = jobs[i]
                i += 1
                if job.id in gone or not has_node(job.node):
                    continue
                if outside and placement is not None:
                    continue  # room is found; only jobs under the capped ancestor help now
                scanned += 1
                if scanned > max_scan:
                    done = True
                    break
                left = alloc[v] - removed[v]
                if left <= ent_v or left - job.slices < lvl_v:
                    continue
                chosen.append(job)
                removed[v] += job.slices
                inside += counts(job)
                free.give(job.node, job.gpu_slices)
                placement = free.find(k)
                if placement is not None and inside >= relief:
                    done = True
                elif i < n:
                    heapq.heappush(heap, (-over(v), v, i))
                break
        if placement is None or inside < relief:
            return None
        if not relief:
            for j in chosen:
                if j.node != placement.node:
                    free.hold(j.node, j.gpu_slices)
            chosen = [j for j in chosen if j.node == placement.node]
            inside = sum(counts(j) for j in chosen)
        for job in sorted(chosen, key=lambda j: (j.started_at, str(j.id))):  # spare the oldest first
            if inside - counts(job) < relief:
                continue
            free.hold(job.node, job.gpu_slices)
            if free.find(k) is not None:
                chosen = [j for j in chosen if j is not job]
                inside -= counts(job)
            else:
                free.give(job.node, job.gpu_slices)
        return chosen
    finally:
        for j in chosen:
            free.hold(j.node, j.gpu_slices)
