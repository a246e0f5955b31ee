"""Where does a pending job stand, and when might it start? Replay the policy forward.

`estimate_starts(snapshot, ends, runtimes)` builds a `PolicyState` from the snapshot and
runs the live policy on a virtual clock: at each running job's expected end its slices
come free, a cycle admits what the policy would admit, and each admitted pending job is
expected to end after its own expected run time. A job's `position` is its place in that
admission order; its `start` the virtual time it was admitted.

Invariants and limits (it is an estimate, and says so):
- Usage stays as in the snapshot (no decay, no new charges) and no new job arrives; no
  preemption happens in the replay (a reclaim would only bring starts forward).
- A running job without an expected end (no time limit, no progress ETA) holds its slices
  past the horizon; so does a pending job without an expected run time once admitted.
- The replay stops at `horizon_s` or after `max_cycles`; jobs not admitted by then get
  `start=None` and positions after all the others, in their accounts' queue order.
- Pure: no clock, no I/O; the same inputs give the same answer.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Mapping

from quota.snapshot import JobId, Snapshot
from quota.state import PolicyState


@dataclass(frozen=True)
class Estimate:
    position: int  # 1 = next to be admitted
    start: float | None  # epoch seconds, or None past the horizon


def estimate_starts(snapshot: Snapshot, ends: Mapping[JobId, float], runtimes: Mapping[JobId, float], *,
                    horizon_s: float = 7 * 86400.0, max_cycles: int = 2000) -> dict[JobId, Estimate]:
    """{pending job id: Estimate}. `ends`: expected end (epoch s) of running jobs;
    `runtimes`: expected run time (s) of pending jobs once started."""
    config = replace(snapshot.config, preemption=False)
    state = PolicyState(snapshot.tree, snapshot.capacity, config)
    for job in snapshot.running:
        state.add_running(job)
    for req in snapshot.pending:
        state.submit(req)
    state.set_usage(snapshot.usage)
    events = [(t, str(j), j) for j, t in ends.items() if any(r.id == j for r in snapshot.running)]
    heapq.heapify(events)
    now, limit = snapshot.now, snapshot.now + horizon_s
    order: list[tuple[JobId, float]] = []
    for _ in range(max_cycles):
        for adm in state.cycle(now, explain=False).admissions:
            order.append((adm.request_id, now))
            if adm.request_id in runtimes:
                heapq.heappush(events, (now + max(0.0, runtimes[adm.request_id]), str(adm.request_id),
                                        adm.request_id))
        if not events or not state.queues or not any(state.queues.values()):
            break
        now = events[0][0]
        if now > limit:
            break
        while events and events[0][0] <= now:
            _, _, job_id = heapq.heappop(events)
            state.finish(job_id)
    out = {job_id: Estimate(i + 1, t) for i, (job_id, t) in enumerate(order)}
    rest = sorted((r for r in snapshot.pending if r.id not in out), key=lambda r: (r.seq, str(r.id)))
    for r in rest:
        out[r.id] = Estimate(len(out) + 1, None)
    return out
