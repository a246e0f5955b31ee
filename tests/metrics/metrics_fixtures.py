"""Realistic views and a simulated contended run for the exporter tests.

`contended_view(t)` is three institutions weighted 1:2:3 on 8 slices (2 T4s x 4
slices on gpu-node-1) plus a GPU-less node, all with jobs waiting. `ContendedRun`
moves the loop's counters and histograms the way the loop would (admissions with
queue waits, usage, preemptions, finished jobs, cycle durations) from a thread,
and republishes the view each tick. Seeded, so runs are repeatable.
"""
from __future__ import annotations

import random
import threading
import time

from scheduler.metrics.exporter import build_registry
from scheduler.metrics.view import AccountView, ClusterView, GpuView, WorkloadView

WEIGHTS = {"inst-a": 1, "inst-b": 2, "inst-c": 3}
CAPACITY = 8
GIB = 1 << 30


def contended_view(at: float, allocated: dict[str, int] | None = None, util: float = 0.8) -> ClusterView:
    allocated = allocated or {"inst-a": 1, "inst-b": 3, "inst-c": 4}
    total_w = sum(WEIGHTS.values())
    accounts = tuple(
        AccountView(name, None, w, guaranteed_slices=w, max_slices=6 if name == "inst-c" else None,
                    entitled_slices=CAPACITY * w / total_w, allocated_slices=allocated.get(name, 0),
                    running_jobs=allocated.get(name, 0),
                    pending_by_reason={"Priority": 2, "Resources": 3 * w, "Fragmentation": int(name == "inst-b")},
                    decayed_usage=1000.0 * w, fairshare_factor=0.5 / w)
        for name, w in WEIGHTS.items())
    used = sum(allocated.values())
    gpus = tuple(GpuView("gpu-node-1", i, f"GPU-0000-{i}", "Tesla T4", util, (6 + i) * GIB, 15 * GIB,
                         30.0 + 10 * i) for i in range(2))
    workloads = (WorkloadView("conv6", "pytorch", "gpu", 12, 5400.0, 900 << 20),
                 WorkloadView("resnet18", "tensorflow", "gpu", 4, 1800.0, 3 * GIB))
    return ClusterView(at=at, capacity_slices=CAPACITY, free_slices=CAPACITY - used, jain_index=0.97,
                       max_share_deviation=0.04, usage_gini=0.08, ray_pending_tasks=0, accounts=accounts,
                       gpus=gpus, nvml_nodes={"gpu-node-1": True, "cpu-node-2": False}, workloads=workloads)


class ContendedRun:
    """Publishes views and moves SchedulerMetrics from a thread until stop()."""

    def __init__(self, tick_s: float = 0.05, seed: int = 5) -> None:
        self.view: ClusterView | None = None
        self.registry, self.metrics = build_registry(lambda: self.view)
        self.tick_s = tick_s
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        for name in WEIGHTS:
            self.metrics.ensure_account(name)

    def step(self) -> None:
        rng, m = self._rng, self.metrics
        started = time.perf_counter()
        a, b = rng.randint(1, 2), rng.randint(2, 3)
        alloc = {"inst-a": a, "inst-b": b, "inst-c": rng.randint(3, CAPACITY - a - b)}  # never over capacity
        for name, w in WEIGHTS.items():
            m.admitted(name, queue_wait_s=rng.expovariate(1.0 / (20.0 / w)))
            m.add_usage(name, alloc[name] * self.tick_s)
            m.job_finished(name, rng.choice(["SUCCEEDED", "SUCCEEDED", "FAILED", "CANCELLED"]))
            if rng.random() < 0.3:
                m.preempted(name, "reclaim_guarantee")
        self.view = contended_view(time.time(), alloc, util=rng.uniform(0.6, 0.95))
        m.observe_cycle(time.perf_counter() - started + rng.uniform(0.001, 0.02))

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.step()

    def start(self) -> "ContendedRun":
        self.step()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
