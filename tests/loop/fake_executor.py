"""A FakeExecutor for the loop's rules: the RayExecutor's interface over plain lists.

Tests decide what Ray "did": `finish(job)` queues a completion for the job's tracked
attempt (a result, a task error, a lost worker, a refusal), `begin(job, at)` marks its
task as started, `refuse` makes `start` raise, and `nodes` is what discovery finds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.runtime.discovery import DiscoveredNode
from scheduler.runtime.executor import Completion
from scheduler.runtime.tasks import TaskPayload, TaskResult


@dataclass
class FakeExecutor:
    results_dir: str
    nodes: list[DiscoveredNode] = field(default_factory=list)
    refuse: set[int] = field(default_factory=set)  # job ids whose start raises
    attempts: dict[int, int] = field(default_factory=dict)  # job id -> attempt handed over
    starts: list[dict] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    queued: list[Completion] = field(default_factory=list)
    begun: dict[int, float] = field(default_factory=dict)  # job id -> task start (epoch s)

    # -- what tests say Ray did -----------------------------------------------------------
    def begin(self, job_id: int, at: float) -> None:
        self.begun[job_id] = at

    def finish(self, job_id: int, *, ok: bool = True, result: dict | None = None, error: str | None = None,
               infrastructure: bool = False, cancelled: bool = False) -> None:
        attempt = self.attempts[job_id]
        if ok and result is None:
            start = self.begun.get(job_id, 0.0)
            result = TaskResult(start, start + 1.0, 0.0, 1)
        self.queued.append(Completion(job_id, attempt, ok, result=result, error=error,
                                      infrastructure=infrastructure, cancelled=cancelled,
                                      started_at=None if ok else self.begun.get(job_id)))

    # -- the executor's interface ---------------------------------------------------------
    def discover(self) -> list[DiscoveredNode]:
        return list(self.nodes)

    def start(self, payload: TaskPayload, *, node: str) -> None:
        if payload.job_id in self.refuse:
            raise RuntimeError(f"node {node} is not in this cluster")
        self.attempts[payload.job_id] = payload.attempt
        self.begun.pop(payload.job_id, None)
        self.starts.append({"job_id": payload.job_id, "node": node, "payload": payload})

    def is_running(self, job_id: int) -> bool:
        return job_id in self.attempts and all(c.job_id != job_id for c in self.queued)

    def tracked(self) -> dict[int, int]:
        return dict(self.attempts)

    def task_started_at(self, job_id: int) -> float | None:
        return self.begun.get(job_id) if job_id in self.attempts else None

    def poll(self) -> list[Completion]:
        out, self.queued = self.queued, []
        for c in out:
            self.attempts.pop(c.job_id, None)
        return out

    def cancel(self, job_id: int) -> None:
        if job_id in self.attempts:
            self.cancelled.append(job_id)

    def forget(self, job_id: int) -> None:
        self.attempts.pop(job_id, None)

    def wait(self, timeout: float, every: bool = False) -> bool:
        return bool(self.queued)

    def wait_gone(self, job_ids, timeout: float) -> None:
        return None

    def shutdown(self) -> None:
        for job_id in list(self.attempts):
            self.cancel(job_id)
