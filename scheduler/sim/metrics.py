"""What a simulated run measured, per policy. Definitions (docs/simulation.md repeats them):

- contended window: the share samples (taken every span / samples seconds) at which the
  institutions' demand (running + queued slices) exceeds the capacity; fairness only
  means something there, since below capacity everyone gets all they ask for;
- entitled share e_i(t): the institution's entitled slices in `quota.report` of the
  policy's state at t (weighted water-filling of the capacity over the demand,
  guarantees and caps included: the figure `fairgpu share` and the gauges show), the
  same reference for every policy;
- x_i = sum over contended samples of allocated_i / sum of e_i (slice-time share over
  entitled share); jain_index = Jain's index of the x_i over institutions with e_i > 0;
- max_share_deviation = max_i |sum(allocated_i - e_i)| / (capacity x contended samples):
  how far, as a fraction of the cluster, one institution sat from its fair share on average;
- wait = first start - submit; JCT = end - submit; mean_jct_s over all jobs;
  wait_p50_s / wait_p95_s over all jobs and per institution;
- makespan_s = last end - first submit; utilisation = slice-seconds run / (capacity x makespan);
- rho (after Themis, finish-time fairness): per institution, sum of its jobs' JCT over
  the sum of their isolated times, isolated time = duration x max(1, slices / (C / N))
  (the job alone on a 1/N share of the C slices, N institutions with jobs); max_rho is the
  largest over institutions (1 = as good as owning a 1/N slice of the cluster).
Percentiles are `workloads.measure.percentile` (linear interpolation, numpy's). Only finished jobs enter the wait, JCT and
rho figures; `unfinished` counts jobs that could never start (a static quota smaller than
the job), which the simulator stops waiting for once no other event is left.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from quota import AccountTree, Capacity, jain_index
from quota import report as account_figures
from workloads.measure import percentile


@dataclass
class RunMetrics:
    jain_index: float
    max_share_deviation: float
    mean_jct_s: float
    makespan_s: float
    utilisation: float
    max_rho: float
    wait_p50_s: float  # 0 when no job finished, as mean_jct_s
    wait_p95_s: float
    jobs: int  # jobs that finished
    unfinished: int  # jobs still waiting when nothing else could happen (e.g. over a static quota)
    preemptions: int
    contended_fraction: float
    per_institution: dict[str, dict[str, float]]
    series_t: list[float] = field(default_factory=list, repr=False)  # sample times (s from the start)
    series_share: dict[str, list[float]] = field(default_factory=dict, repr=False)  # allocated / capacity
    series_entitled: dict[str, list[float]] = field(default_factory=dict, repr=False)  # entitled / capacity

    def summary(self) -> dict:
        keys = ("jain_index", "max_share_deviation", "mean_jct_s", "makespan_s", "utilisation", "max_rho",
                "wait_p50_s", "wait_p95_s", "jobs", "unfinished", "preemptions", "contended_fraction")
        return {k: getattr(self, k) for k in keys}


class Recorder:
    """Slice allocation per institution over time, sampled on a fixed grid."""

    def __init__(self, tree: AccountTree, capacity: Capacity, state, start: float, sample_every: float):
        self.tree = tree
        self.capacity = capacity.total_slices
        self.state = state
        self.insts = list(tree.kids(None))
        self.top = {leaf: tree.top(leaf) for leaf in tree.leaves()}
        self.alloc = {i: 0 for i in self.insts}
        self.busy_area = 0.0
        self.busy = 0
        self.t_busy = start
        self.start = start
        self.every = sample_every
        self.next_sample = start
        self.times: list[float] = []
        self.shares: list[list[int]] = []
        self.entitled: list[list[float]] = []
        self.demand_total: list[float] = []
        self.preemptions = 0

    def advance(self, t: float) -> None:
        while self.next_sample <= t:
            self._sample(self.next_sample)
            self.next_sample += self.every

    def _sample(self, at: float) -> None:
        top = {f.name: f for f in account_figures(self.state.snapshot(at, {})) if f.parent is None}
        self.times.append(at - self.start)
        self.shares.append([self.alloc[i] for i in self.insts])
        self.entitled.append([top[i].entitled_slices for i in self.insts])
        self.demand_total.append(float(sum(f.running_slices + f.pending_slices for f in top.values())))

    def change(self, account: str, t: float, delta: int) -> None:
        self.busy_area += self.busy * (t - self.t_busy)
        self.t_busy = t
        self.busy += delta
        self.alloc[self.top[account]] += delta

    def finish(self, jobs: list) -> RunMetrics:
        import numpy as np

        insts = self.insts
        done = [j for j in jobs if j.finish is not None]
        n_inst = len({j.account for j in jobs}) or 1
        fair = self.capacity / n_inst
        per: dict[str, dict[str, float]] = {}
        by_inst: dict[str, list] = {i: [] for i in insts}
        for j in done:
            by_inst[self.top[j.account]].append(j)
        for inst, js in by_inst.items():
            if not js:
                continue
            waits = [j.first_start - j.submit for j in js]
            jct = sum(j.finish - j.submit for j in js)
            iso = sum(j.duration * max(1.0, j.slices / fair) for j in js)
            per[inst] = {"jobs": len(js), "wait_p50_s": percentile(waits, 50),
                         "wait_p95_s": percentile(waits, 95), "rho": jct / iso}
        waits = [j.first_start - j.submit for j in done]
        first = min((j.submit for j in jobs), default=0.0)
        last = max((j.finish for j in done), default=first)
        makespan = last - first
        shares = np.array(self.shares, dtype=float).reshape(len(self.times), len(insts))
        ent = np.array(self.entitled, dtype=float).reshape(len(self.times), len(insts))
        contended = np.array(self.demand_total) > self.capacity
        jain, dev = 1.0, 0.0
        if contended.any():
            a_sum, e_sum = shares[contended].sum(axis=0), ent[contended].sum(axis=0)
            x = a_sum[e_sum > 0] / e_sum[e_sum > 0]
            jain = jain_index([float(v) for v in x])
            dev = float(np.abs(a_sum - e_sum).max() / (self.capacity * contended.sum()))
            for k, inst in enumerate(insts):
                if inst in per and e_sum[k] > 0:
                    per[inst]["share_ratio"] = float(a_sum[k] / e_sum[k])
        cap = float(self.capacity)
        return RunMetrics(
            jain_index=jain,
            max_share_deviation=dev,
            mean_jct_s=float(np.mean([j.finish - j.submit for j in done])) if done else 0.0,
            makespan_s=makespan,
            utilisation=self.busy_area / (cap * makespan) if makespan > 0 else 0.0,
            max_rho=max((p["rho"] for p in per.values()), default=1.0),
            wait_p50_s=percentile(waits, 50) if waits else 0.0,
            wait_p95_s=percentile(waits, 95) if waits else 0.0,
            jobs=len(done),
            unfinished=len(jobs) - len(done),
            preemptions=self.preemptions,
            contended_fraction=float(contended.mean()) if len(contended) else 0.0,
            per_institution=per,
            series_t=list(self.times),
            series_share={inst: (shares[:, k] / cap).tolist() for k, inst in enumerate(insts)},
            series_entitled={inst: (ent[:, k] / cap).tolist() for k, inst in enumerate(insts)},
        )
