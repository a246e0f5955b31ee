"""A seeded synthetic workload: skewed institutions, diurnal arrivals, heavy-tailed runs.

Given (jobs, days, institutions, gpus, slices per GPU, load, seed) it returns the same
Trace every time (numpy's PCG64 seeded with `seed`):
- institution sizes follow Zipf: institution i (0-based) submits a share proportional to
  1 / (i + 1)^zipf_s of the jobs; weights (their paid share) are 1 + round(9 * sqrt(size
  share / largest size share)), so big institutions want more than their weight gives
  them and small ones less, and each is guaranteed `guarantee_frac` of its weighted share;
- arrivals are a Poisson process whose rate follows the day, 1 + a*sin(2 pi (h - 9) / 24)
  with peak at 15:00, and drops by `weekend_dip` on days 5 and 6 of each week;
- a job asks for 1, 2 slices (a fraction of a GPU) or 1, 2, 4, 8 GPUs, more small than big;
- run times are log-normal (sigma 1.8, heavy right tail) clipped to [60 s, 7 days], then
  scaled so the offered load, sum(slices x duration) / (capacity x span), equals `load`.
Nodes have `gpus_per_node` GPUs each (the last one fewer if it does not divide).
"""
from __future__ import annotations

import math

from quota import AccountSpec, Capacity, NodeCapacity
from scheduler.sim.trace import Trace, TraceJob

DAY = 86400.0
GPU_SHAPES = ((0.25, 0.22), (0.5, 0.18), (1, 0.28), (2, 0.14), (4, 0.10), (8, 0.08))  # (GPUs, probability)


def synthetic(jobs: int = 100_000, days: float = 30.0, institutions: int = 100, gpus: int = 1000,
              slices_per_gpu: int = 4, gpus_per_node: int = 8, load: float = 0.9, seed: int = 0,
              zipf_s: float = 1.0, diurnal: float = 0.6, weekend_dip: float = 0.4,
              guarantee_frac: float = 0.25, gpu_type: str = "T4") -> Trace:
    import numpy as np

    if jobs < 1 or days <= 0 or institutions < 1 or gpus < 1 or load <= 0:
        raise ValueError("jobs, days, institutions, gpus and load must be positive")
    rng = np.random.default_rng(seed)
    span = days * DAY
    names = [f"inst{i:03d}" for i in range(institutions)]
    size = 1.0 / np.arange(1, institutions + 1) ** zipf_s
    size /= size.sum()

    # arrivals: thinning of a homogeneous process against the diurnal/weekly rate
    times = np.empty(0)
    peak = 1.0 + diurnal
    while times.size < jobs:
        t = rng.uniform(0.0, span, size=int((jobs - times.size) * peak * 1.3) + 16)
        hour = (t % DAY) / 3600.0
        rate = 1.0 + diurnal * np.sin(2 * math.pi * (hour - 9.0) / 24.0)
        rate *= np.where(((t // DAY) % 7) >= 5, 1.0 - weekend_dip, 1.0)
        times = np.concatenate([times, t[rng.uniform(0.0, peak, size=t.size) < rate]])
    times = np.sort(rng.choice(times, size=jobs, replace=False))

    owner = rng.choice(institutions, size=jobs, p=size)
    shape_gpus = np.array([g for g, _ in GPU_SHAPES])
    shape_p = np.array([p for _, p in GPU_SHAPES])
    asked = shape_gpus[rng.choice(len(GPU_SHAPES), size=jobs, p=shape_p / shape_p.sum())]
    asked = np.minimum(asked, gpus_per_node)
    slices = np.where(asked < 1, np.ceil(asked * slices_per_gpu), asked * slices_per_gpu).astype(int)
    slices = np.maximum(slices, 1)
    dur = np.clip(rng.lognormal(mean=math.log(3600.0), sigma=1.8, size=jobs), 60.0, 7 * DAY)
    capacity_slices = gpus * slices_per_gpu
    dur *= load * capacity_slices * span / float((slices * dur).sum())
    dur = np.maximum(dur, 1.0)

    jobs_out = [TraceJob(f"j{i}", names[o], float(t), float(d), int(k))
                for i, (o, t, d, k) in enumerate(zip(owner.tolist(), times.tolist(), dur.tolist(), slices.tolist()))]
    weight = 1 + np.round(9 * np.sqrt(size / size.max()))
    weighted_share = weight / weight.sum() * capacity_slices
    accounts = [AccountSpec(n, float(w), guaranteed=int(guarantee_frac * s))
                for n, w, s in zip(names, weight.tolist(), weighted_share.tolist())]
    full, rest = divmod(gpus, gpus_per_node)
    nodes = [NodeCapacity(f"node{i:04d}", gpus_per_node, slices_per_gpu, gpu_type) for i in range(full)]
    if rest:
        nodes.append(NodeCapacity(f"node{full:04d}", rest, slices_per_gpu, gpu_type))
    return Trace(jobs_out, accounts, Capacity(tuple(nodes)), name=f"synthetic-seed{seed}")
