"""The start phase: what the loop asks of Ray once a cycle's transaction committed.

`RaySide` is a collaborator of scheduler.loop.coordinator.SchedulingLoop, handed what it
needs: the executor, the usage meter, NodeWatch (which node runs which framework, Ray's
refusals), the loop's fenced `transaction`, its `EndAttempt` and AttemptWatch's
`checkpoint`. It owns when running jobs were last charged.

Invariants:
- Ray is only called here, after the commit that made each step true: a crash in
  between leaves RUNNING rows that recovery (scheduler.loop.recovery) settles or requeues.
- A preemption asks its victims to checkpoint, cancels them in Ray, ends their attempts
  (`EndAttempt`, one transaction) and waits until Ray freed their slices before anyone is
  handed those slices.
- A job Ray refuses at once (or whose node cannot import its framework) is queued again
  through `EndAttempt`: it never started, so it costs nothing; NodeWatch holds it back.
- Every `usage_period_s` running jobs are charged up to now, each from its task's own start.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import replace

import quota
from scheduler.loop import apply
from scheduler.loop.nodes import NodeWatch
from scheduler.loop.report import CycleReport
from scheduler.loop.watch import EndAttempt
from scheduler.runtime import jobfiles
from scheduler.runtime.tasks import TaskPayload
from scheduler.services.snapshot import Synced, running_jobs
from scheduler.store import Job, JobState
from scheduler.vocab import RAY_REFUSED


class RaySide:
    """Stop, preempt, start and meter in Ray (see the module)."""

    def __init__(self, executor, meter: apply.UsageMeter, nodes: NodeWatch,
                 transaction: Callable[[], AbstractContextManager], end: EndAttempt,
                 checkpoint: Callable[[list[int]], None], *, usage_period_s: float = 15.0,
                 stop_grace_s: float = 10.0, monotonic: Callable[[], float] = time.monotonic):
        self.executor, self.meter, self.nodes = executor, meter, nodes
        self.transaction, self.end, self.checkpoint = transaction, end, checkpoint
        self.usage_period_s = usage_period_s  # how often running jobs are charged
        self.stop_grace_s = stop_grace_s  # a fenced attempt's script: SIGTERM, then SIGKILL after this
        self.monotonic = monotonic
        self._last_meter = float("-inf")

    def stop(self, stop: Iterable[int], gone: Iterable[int]) -> None:
        """Stop the attempts the API cancelled (or settled); cancel those whose node left
        (Ray reports them, and settle ends their attempts)."""
        for job_id in stop:
            self.executor.cancel(job_id)
            self.executor.forget(job_id)
        for job_id in gone:
            self.executor.cancel(job_id)

    def preempt(self, preemptions: Iterable[quota.Preemption], jobs: dict, report: CycleReport) -> None:
        """Checkpoint, cancel and end the victims; return once Ray freed their slices."""
        preemptions = list(preemptions)
        victims = [p.job_id for p in preemptions]
        started_at = {j: self.executor.task_started_at(j) for j in victims}
        self.checkpoint([j for j in victims if started_at[j] is not None])
        for job_id in victims:
            self.executor.cancel(job_id)
        with self.transaction() as s:
            for p in preemptions:
                job = jobs.get(p.job_id)
                if job is None or job.state != JobState.RUNNING:
                    continue
                lost = apply.Lost("preempted", p.reason, charge_until=report.at, started_at=started_at.get(job.id))
                if self.end(s, job, report, lost).outcome == apply.Outcome.REQUEUED:
                    report.preempted += 1
                    report.preemptions.append((job.account_id, p.kind))
        self.executor.wait_gone(victims, timeout=10.0)
        for job_id in victims:
            self.executor.forget(job_id)

    def hand_over(self, started: list, loaded: Synced, report: CycleReport) -> None:
        """Hand the admitted (job, admission)s to Ray, each payload with the attempt limits
        as loaded (settings host_memory_per_slice, max_processes) and its node's slices."""
        if not started:
            return
        limits, node_slices = loaded.attempt, {n.name: n.slices for n in loaded.capacity.nodes}
        for job, adm in started:
            payload = replace(TaskPayload.for_job(job_id=job.id, attempt=job.attempts + 1, model=job.model,
                                                  framework=job.framework, mode=job.mode, spec=job.spec,
                                                  num_gpus=adm.num_gpus, results_dir="", submitted_at=0.0,
                                                  slices=job.slices),
                              host_memory_per_slice=limits.host_memory_per_slice,
                              max_processes=limits.max_processes, node_slices=node_slices.get(adm.node, 0),
                              stop_grace_s=self.stop_grace_s)
            try:
                if not self.nodes.can_run(adm.node, job.framework):
                    raise LookupError(f"node {adm.node} cannot run {job.framework}")
                self.executor.start(payload, node=adm.node)
                self.meter.started(job.id)
                report.admitted += 1
                report.admissions.append((job.account_id, (report.at - job.submitted_at).total_seconds()))
            except Exception as exc:
                with self.transaction() as s:
                    why = self.nodes.note_refusal(s, job.id, f"{type(exc).__name__}: {exc}")
                    row = s.get(Job, job.id)
                    if row is not None and row.state == JobState.RUNNING:  # never started: it costs nothing
                        self.end(s, row, report, apply.Lost("requeued", why, reason=RAY_REFUSED,
                                                            unclean_stops=row.unclean_stops))

    def meter_if_due(self, report: CycleReport) -> None:
        """Every usage_period_s: charge running jobs up to now, each from its task's own start."""
        if self.monotonic() - self._last_meter < self.usage_period_s:
            return
        self._last_meter = self.monotonic()
        tracked = self.executor.tracked()
        if not tracked:
            return
        with self.transaction() as s:
            rows: list[dict] = []
            for job in running_jobs(s):
                if tracked.get(job.id) == job.attempts:
                    report.count(job, charged=self.meter.charge(s, job, report.at, rows,
                                                                started_at=self.executor.task_started_at(job.id)))
            apply.insert_usage(s, rows)

    def clear_files(self, ended: Iterable[int]) -> None:
        """The files of jobs that reached a final state go (their logs stay)."""
        root = self.executor.results_dir
        for job_id in ended:
            if os.path.isdir(os.path.join(root, str(job_id))):  # one stat where nothing was written
                jobfiles.clear(root, job_id)
