"""The discrete-event loop: a trace, a cluster and a policy on a virtual clock.

Each step takes the next virtual time t (the earliest job arrival or job end), applies
everything that happens at t (ends first, then arrivals), and then runs ONE scheduling
cycle of the live policy, quota.PolicyState.cycle (the same code as quota.decide), unless
`could_act()` proves the decision would be empty. The decision is applied at once: an
admitted job starts at t and ends at t + its remaining work; a preempted job goes back to
its place in its account's queue (its arrival order, as the live scheduler's requeued
jobs keep their submission order) keeping its progress (checkpoint and restart, as Themis
and Gandiva model it), and its scheduled end is cancelled.

Usage for the fair-share factor is decayed slice-seconds per leaf account, kept exactly:
between events an account's running slices r are constant, so its usage goes from U to
U d + r h / ln 2 (1 - d) with d = 2^(-dt / h), h the half-life (the integral of the decay).
As in the live loop (scheduler/loop/coordinator.py, usage_period_s = 15 s), the policy is handed new
usage at most once per `usage_period_s` of virtual time, at the first cycle after it. It is handed
lazily (`UsageClock.lazy_at`: the clock's state copied, the decay summed only if a cycle
reads the fair-share factors). `observe(t, decision)` sees every cycle's decision.

Invariants: the virtual clock never goes back; every job of the trace that can run ends
exactly once; the slices in use never exceed capacity (PolicyState guarantees it); the
result depends on the inputs alone (no randomness, no wall clock in the simulation).
"""
from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from quota import AccountTree, Capacity, Decision, PendingRequest, PolicyConfig, PolicyState
from quota.lazy import Lazy
from quota.usage import DEFAULT_HALF_LIFE_S
from scheduler.sim.metrics import Recorder, RunMetrics
from scheduler.sim.trace import Trace


@dataclass(frozen=True)
class SimOptions:
    half_life_s: float = DEFAULT_HALF_LIFE_S
    samples: int = 720  # share samples over the trace's span (for the plot and the equity measures)
    explain: bool = False  # ask the policy for pending reasons (costs O(pending) per cycle)
    usage_period_s: float = 15.0  # how often usage is charged, as the live loop's usage_period_s


@dataclass
class SimResult:
    policy: str
    metrics: RunMetrics
    events: int
    cycles: int
    skipped_cycles: int
    wall_s: float
    cpu_s: float  # process CPU time: the honest figure on a shared, loaded machine
    skipped_jobs: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else float("inf")


class _Job:
    __slots__ = ("id", "account", "submit", "duration", "slices", "remaining", "first_start", "started", "finish",
                 "attempt", "preemptions")

    def __init__(self, id, account, submit, duration, slices):
        self.id, self.account, self.submit, self.duration, self.slices = id, account, submit, duration, slices
        self.remaining = duration
        self.first_start = self.started = self.finish = None
        self.attempt = 0
        self.preemptions = 0


class UsageClock:
    """Decayed slice-seconds per account, exact for piecewise-constant running slices."""

    def __init__(self, half_life_s: float):
        self.lam = math.log(2.0) / half_life_s
        self.u: dict[str, float] = {}
        self.t: dict[str, float] = {}
        self.r: dict[str, int] = {}

    def add_rate(self, account: str, now: float, delta: int) -> None:
        self._advance(account, now)
        self.r[account] = self.r.get(account, 0) + delta

    def _advance(self, a: str, now: float) -> None:
        t = self.t.get(a)
        if t is not None and now > t:
            d = math.exp(-self.lam * (now - t))
            self.u[a] = self.u[a] * d + self.r[a] * (1.0 - d) / self.lam
        elif t is None:
            self.u[a], self.r[a] = 0.0, 0
        self.t[a] = now

    def at(self, now: float) -> dict[str, float]:
        return _decayed(self.lam, self.u, self.t, self.r, now)

    def lazy_at(self, now: float) -> Lazy:
        """`at(now)`, computed only if the policy reads it (a cycle with one account queued
        and nothing to reclaim does not): the state is copied now, the sums made later."""
        lam, u, t, r = self.lam, dict(self.u), dict(self.t), dict(self.r)
        return Lazy(lambda: _decayed(lam, u, t, r, now))


def _decayed(lam: float, u: dict[str, float], t: dict[str, float], r: dict[str, int], now: float) -> dict[str, float]:
    exp = math.exp
    out = {}
    for a, ua in u.items():
        d = exp(-lam * (now - t[a]))
        out[a] = ua * d + r[a] * (1.0 - d) / lam
    return out


def simulate(trace: Trace, tree: AccountTree, capacity: Capacity, policy: PolicyConfig, name: str = "policy",
             options: SimOptions = SimOptions(), observe: Callable[[float, Decision], None] | None = None) -> SimResult:
    """Run `trace` under `policy`. `observe(t, decision)`, if given, sees every cycle's decision
    (tests/sim/test_decision_sequence.py pins the sequence with it)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    jobs: dict[str, _Job] = {}
    skipped: dict[str, int] = dict(trace.skipped)
    leaves = set(tree.leaves())
    shape_ok: dict[int, bool] = {}
    for tj in trace.jobs:
        if tj.account not in leaves:
            skipped["account not in the tree"] = skipped.get("account not in the tree", 0) + 1
            continue
        if tj.slices not in shape_ok:
            shape_ok[tj.slices] = capacity.shape_error(tj.slices) is None
        if not shape_ok[tj.slices]:
            skipped["larger than any node"] = skipped.get("larger than any node", 0) + 1
            continue
        if tj.id in jobs:
            raise ValueError(f"job id {tj.id} appears twice in the trace")
        jobs[tj.id] = _Job(tj.id, tj.account, tj.submit_s, tj.duration_s, tj.slices)

    def requeue(req: PendingRequest, job, now: float) -> PendingRequest:
        rec = jobs[job.id]  # back in its place (its seq is its arrival), with the work it has left
        return replace(req, work_s=rec.remaining - (now - job.started_at))

    state = PolicyState(tree, capacity, policy, requeue=requeue)
    usage = UsageClock(options.half_life_s)
    arrivals = sorted(jobs.values(), key=lambda j: (j.submit, j.id))
    span = (max((j.submit + j.duration for j in arrivals), default=0.0) - (arrivals[0].submit if arrivals else 0.0))
    rec = Recorder(tree, capacity, state, start=arrivals[0].submit if arrivals else 0.0,
                   sample_every=max(span / max(options.samples, 1), 1.0))
    ends: list[tuple[float, int, str, int]] = []  # (time, tie, job id, attempt)
    tie = 0
    i, n = 0, len(arrivals)
    events = cycles = skipped_cycles = 0
    next_meter = -math.inf
    submit, finish, could_act, cycle = state.submit, state.finish, state.could_act, state.cycle

    while i < n or ends:
        t = min(arrivals[i].submit if i < n else math.inf, ends[0][0] if ends else math.inf)
        rec.advance(t)
        while ends and ends[0][0] <= t:
            _, _, jid, attempt = heapq.heappop(ends)
            j = jobs[jid]
            if attempt != j.attempt:
                continue  # the job was preempted after this end was scheduled
            events += 1
            finish(jid)
            j.finish = t
            j.remaining = 0.0
            usage.add_rate(j.account, t, -j.slices)
            rec.change(j.account, t, -j.slices)
        while i < n and arrivals[i].submit <= t:
            j = arrivals[i]
            i += 1
            events += 1
            submit(PendingRequest(j.id, j.account, j.slices, seq=float(i), submitted_at=j.submit, work_s=j.duration))
        if not could_act():
            skipped_cycles += 1
            continue
        cycles += 1
        if t >= next_meter:  # the live loop charges usage on its own period, not every cycle
            state.set_usage(usage.lazy_at(t))
            next_meter = t + options.usage_period_s
        d = cycle(t, explain=options.explain)
        if observe is not None:
            observe(t, d)
        for p in d.preemptions:
            j = jobs[p.job_id]
            j.remaining -= t - j.started
            j.attempt += 1
            j.preemptions += 1
            j.started = None
            usage.add_rate(j.account, t, -j.slices)
            rec.change(j.account, t, -j.slices)
        for a in d.admissions:
            j = jobs[a.request_id]
            j.started = t
            if j.first_start is None:
                j.first_start = t
            tie += 1
            heapq.heappush(ends, (t + j.remaining, tie, j.id, j.attempt))
            usage.add_rate(j.account, t, j.slices)
            rec.change(j.account, t, j.slices)
        rec.preemptions += len(d.preemptions)
    metrics = rec.finish(list(jobs.values()))
    return SimResult(name, metrics, events, cycles, skipped_cycles, time.perf_counter() - wall0,
                     time.process_time() - cpu0, skipped)
