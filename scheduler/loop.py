"""The scheduling loop: each cycle is load, decide (quota.decide), apply.

Numbered phases of one cycle:
 1. collect:   completions from Ray (no transaction open while talking to Ray);
 2. settle:    record them: SUCCEEDED / FAILED, or requeue after a worker or node died
               (FAILED with the reason past the retry limit); charge usage;
 3. reconcile: stop Ray tasks of jobs the API cancelled; requeue jobs on nodes gone;
 4. capacity:  refresh nodes from Ray (joins and departures change capacity);
 5. decide:    load a Snapshot from the database and ask quota.decide;
 6. apply:     preempt victims (cancel in Ray, requeue at the head of their queue),
               wait until Ray has freed their slices, then admit: mark RUNNING and hand
               each job to Ray; store every waiting job's reason;
 7. meter:     charge running jobs' slice-seconds every `usage_period_s`.

Invariants: all state lives in the database, so a new loop after a crash recovers
from it alone (`recover`); Ray is never given a task it cannot start at once (the
policy's placements are per physical GPU, and preemptors wait for their victims).
The clock, engine and executor are injected.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from sqlmodel import select

import quota
from scheduler import apply
from scheduler.executor import Completion, RayExecutor
from scheduler.services.capacity import set_node, slices_per_gpu_for
from scheduler.services.settings import policy_settings
from scheduler.services.snapshot import SnapshotLoader, active_jobs
from scheduler.store import Account, Job, JobState, Node, StaleJob, session_scope
from scheduler.tasks import settle_attempt

log = logging.getLogger("fairgpu.loop")


@dataclass
class CycleReport:
    """What one cycle did, for metrics, the demo and tests."""

    at: datetime
    decision: quota.Decision | None = None
    snapshot: quota.Snapshot | None = None
    admitted: int = 0
    preempted: int = 0
    finished: int = 0
    requeued: int = 0
    duration_s: float = 0.0
    ray_start_delays: list[float] = field(default_factory=list)
    # per-account events, for the metrics (account ids; the publisher names them)
    admissions: list[tuple[int, float]] = field(default_factory=list)  # (account_id, queue wait s)
    preemptions: list[tuple[int, str]] = field(default_factory=list)  # (account_id, reason)
    finishes: list[tuple[int, str]] = field(default_factory=list)  # (account_id, final state)
    usage: dict[int, float] = field(default_factory=dict)  # account_id -> slice-seconds charged


class SchedulingLoop:
    def __init__(self, engine, executor: RayExecutor, clock: Callable[[], datetime], *,
                 slices_per_gpu: int | None = None, retry_limit: int = 3, usage_period_s: float = 15.0,
                 discover: bool = True, on_cycle: Callable[[CycleReport], None] | None = None):
        self.engine = engine
        self.executor = executor
        self.clock = clock
        self.slices_per_gpu = slices_per_gpu
        self.retry_limit = retry_limit
        self.usage_period_s = usage_period_s
        self.discover = discover
        self.on_cycle = on_cycle
        self.meter = apply.UsageMeter()
        self.loader = SnapshotLoader()
        self._last_meter = 0.0
        self._last_capacity = float("-inf")
        self.capacity_period_s = 2.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.last_report: CycleReport | None = None

    # -- lifecycle --------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self, period_s: float = 1.0) -> None:
        """Cycle until stop(): after each cycle, wait for a completion, a wake-up or the period."""
        while not self._stop.is_set():
            try:
                self.cycle()
            except Exception:  # keep scheduling; the next cycle starts from the database again
                log.exception("scheduling cycle failed")
                time.sleep(0.5)
            if self._stop.is_set():
                break
            self._wake.clear()
            deadline = time.monotonic() + period_s
            while not self._stop.is_set() and not self._wake.is_set() and time.monotonic() < deadline:
                if self.executor.attempts:
                    self.executor.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                    if any(True for _ in self._ready()):
                        break
                else:
                    self._wake.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def _ready(self):
        refs = [a.ref for a in self.executor.attempts.values()]
        if refs:
            ready, _ = self.executor.ray.wait(refs, num_returns=1, timeout=0)
            yield from ready

    # -- recovery ---------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """After a crash or restart: every RUNNING job either finished (its result file is
        there) or goes back to the head of its queue. Returns counts."""
        now = self.clock()
        counts = {"finished": 0, "requeued": 0}
        with session_scope(self.engine) as s:
            jobs = s.exec(select(Job).where(Job.state == JobState.RUNNING)).all()
            for job in jobs:
                result = settle_attempt(self.executor.results_dir, job.id, job.attempts)
                if result is not None:
                    end = apply.ts(result.get("task_finished_at", now.timestamp()))
                    self.meter.charge(s, job, end)
                    apply.finish(s, job, ok=True, at=end, result=result, error=None)
                    counts["finished"] += 1
                else:
                    self.meter.charge(s, job, self._last_charge_point(s, job, now))
                    apply.requeue(s, job, at=now, event="requeued",
                                  message="the scheduler restarted while it ran; queued again")
                    counts["requeued"] += 1
                self.meter.forget(job.id)
        return counts

    def _last_charge_point(self, s, job: Job, now: datetime) -> datetime:
        # without a heartbeat we do not know when it died: charge up to the last meter point
        from sqlalchemy import func

        from scheduler.store import UsageRecord

        last = s.exec(select(func.max(UsageRecord.at)).where(UsageRecord.job_id == job.id)).one()
        return last or job.started_at or now

    # -- capacity ---------------------------------------------------------------------
    def refresh_capacity(self, now: datetime) -> None:
        found = self.executor.discover()
        with session_scope(self.engine) as s:
            rows = {n.name: n for n in s.exec(select(Node).where(Node.source == "ray")).all()}
            for d in found:
                spg = self.slices_per_gpu or slices_per_gpu_for(d.gpu_type)
                row = rows.pop(d.name, None)
                if row is None or not row.active or row.gpus != d.gpus or row.slices_per_gpu != spg:
                    set_node(s, node=d.name, gpus=d.gpus, slices_per_gpu=spg, gpu_type=d.gpu_type, at=now,
                             source="ray")
            for row in rows.values():
                if row.active:
                    row.active = False
                    row.updated_at = now
                    s.add(row)

    # -- one cycle ----------------------------------------------------------------------
    def cycle(self) -> CycleReport:
        t0 = time.perf_counter()
        now = self.clock()
        report = CycleReport(at=now)
        # 1-2. collect and settle
        self._settle(self.executor.poll(), now, report)
        # 3. reconcile with what the API changed
        self._reconcile(now, report)
        # 4. capacity (Ray's node list costs a round trip: at most every capacity_period_s)
        if self.discover and time.monotonic() - self._last_capacity >= self.capacity_period_s:
            self._last_capacity = time.monotonic()
            self.refresh_capacity(now)
        # 5. decide
        with session_scope(self.engine) as s:
            half_life = policy_settings(s).half_life_s
            by_id = self.meter.usage.get(s, now, half_life, time.monotonic())
            names = dict(s.connection().execute(select(Account.id, Account.name)).all())
            usage = {names[i]: v for i, v in by_id.items() if i in names}
            loaded = self.loader.load(s, now, usage=usage)
        decision = quota.decide(loaded.snapshot)
        report.decision, report.snapshot = decision, loaded.snapshot
        # 6. apply
        self._apply(decision, loaded, now, report)
        # 7. meter
        if time.monotonic() - self._last_meter >= self.usage_period_s:
            self._meter(now, report)
        report.duration_s = time.perf_counter() - t0
        self.last_report = report
        if self.on_cycle:
            self.on_cycle(report)
        return report

    def _charge(self, s, job: Job, until: datetime, report: CycleReport | None) -> None:
        amount = self.meter.charge(s, job, until)
        if report is not None and amount > 0:
            report.usage[job.account_id] = report.usage.get(job.account_id, 0.0) + amount

    def _settle(self, completions: list[Completion], now: datetime, report: CycleReport) -> None:
        if not completions:
            return
        if any(c.infrastructure for c in completions):
            self._last_capacity = float("-inf")  # a node may have gone: look again now
        with session_scope(self.engine) as s:
            rows = {j.id: j for j in active_jobs(s, [c.job_id for c in completions])}
            for c in completions:
                job = rows.get(c.job_id)
                if job is None or job.state != JobState.RUNNING or job.attempts != c.attempt:
                    self.meter.forget(c.job_id)
                    continue  # already settled (cancelled or preempted) by someone else
                end = apply.ts(c.result["task_finished_at"]) if c.ok and c.result else now
                self._charge(s, job, end, report)
                self.meter.forget(job.id)
                try:
                    if c.ok:
                        state = apply.finish(s, job, ok=True, at=end, result=c.result, error=None)
                        report.ray_start_delays.append(c.result.get("ray_start_delay_s", 0.0))
                    elif c.infrastructure or c.cancelled:
                        saved = settle_attempt(self.executor.results_dir, job.id, job.attempts)
                        if saved is not None:  # it finished before its worker went away
                            state = apply.finish(s, job, ok=True, at=end, result=saved, error=None)
                        elif job.attempts >= self.retry_limit:
                            state = apply.finish(s, job, ok=False, at=now, result=None,
                                                 error=f"gave up after {job.attempts} attempts: {c.error}")
                        else:
                            apply.requeue(s, job, at=now, event="requeued",
                                          message=f"attempt {job.attempts} lost its worker or node: {c.error}")
                            report.requeued += 1
                            continue
                    else:
                        state = apply.finish(s, job, ok=False, at=now, result=None, error=c.error)
                    report.finished += 1
                    report.finishes.append((job.account_id, state.value))
                except StaleJob:
                    continue

    def _reconcile(self, now: datetime, report: CycleReport) -> None:
        tracked = dict(self.executor.attempts)
        if not tracked:
            return
        with session_scope(self.engine) as s:
            rows = active_jobs(s, list(tracked))
            live_nodes = {n.name for n in s.exec(select(Node).where(Node.active)).all()}
            for job in rows:
                att = tracked[job.id]
                if job.state != JobState.RUNNING or job.attempts != att.attempt:
                    # cancelled through the API (or otherwise settled): stop it in Ray
                    if job.state.is_finished() and job.finished_at is not None:
                        self._charge(s, job, job.finished_at, report)
                        report.finishes.append((job.account_id, job.state.value))
                    self.meter.forget(job.id)
                    self.executor.cancel(job.id)
                    self.executor.forget(job.id)
                elif job.node not in live_nodes and self.discover:
                    self.executor.cancel(job.id)  # its node left: Ray reports it, settle requeues

    def _apply(self, decision: quota.Decision, loaded, now: datetime, report: CycleReport) -> None:
        jobs = loaded.jobs
        victims = [p.job_id for p in decision.preemptions]
        if victims:
            for job_id in victims:
                self.executor.cancel(job_id)
            with session_scope(self.engine) as s:
                for p in decision.preemptions:
                    job = jobs.get(p.job_id)
                    if job is None or job.state != JobState.RUNNING:
                        continue
                    self._charge(s, job, now, report)
                    self.meter.forget(job.id)
                    try:
                        done = settle_attempt(self.executor.results_dir, job.id, job.attempts)
                        if done is not None:  # it finished just before it was stopped
                            state = apply.finish(s, job, ok=True, at=now, result=done, error=None)
                            report.finished += 1
                            report.finishes.append((job.account_id, state.value))
                            continue
                        apply.requeue(s, job, at=now, event="preempted", message=p.reason)
                        report.preempted += 1
                        report.preemptions.append((job.account_id, p.reason))
                    except StaleJob:
                        pass
            self.executor.wait_gone(victims, timeout=10.0)
            for job_id in victims:
                self.executor.forget(job_id)
        started = []
        with session_scope(self.engine) as s:
            for adm in decision.admissions:
                job = jobs.get(adm.request_id)
                if job is None:
                    continue
                try:
                    apply.admit(s, job, node=adm.node, gpu_slices=adm.gpu_slices, at=now)
                except StaleJob:
                    continue
                started.append((job, adm))
            waiting = {jid: (w.reason, w.message) for jid, w in decision.waiting.items()}
            current = {j.id: (j.reason, j.reason_message) for j in jobs.values() if j.state == JobState.PENDING}
            apply.set_reasons(s, waiting, current)
        for job, adm in started:  # after commit: a crash here leaves RUNNING rows that recover() requeues
            payload = {"model": job.model, "framework": job.framework, "mode": job.mode, "spec": job.spec}
            try:
                self.executor.start(job_id=job.id, attempt=job.attempts + 1, node=adm.node,
                                    num_gpus=adm.num_gpus, payload=payload)
                self.meter.charged_until[job.id] = now.timestamp()
                report.admitted += 1
                report.admissions.append((job.account_id, (now - job.submitted_at).total_seconds()))
            except Exception as exc:
                log.exception("could not hand job %s to Ray", job.id)
                with session_scope(self.engine) as s:
                    fresh = s.get(Job, job.id)
                    if fresh is not None and fresh.state == JobState.RUNNING:
                        apply.requeue(s, fresh, at=now, event="requeued", message=f"Ray refused it: {exc}")

    def _meter(self, now: datetime, report: CycleReport) -> None:
        self._last_meter = time.monotonic()
        with session_scope(self.engine) as s:
            running = s.exec(select(Job).where(Job.state == JobState.RUNNING)).all()
            for job in running:
                if job.id in self.executor.attempts:
                    self._charge(s, job, now, report)

    def drain(self) -> int:
        """On shutdown: stop every running attempt and requeue its job (none is lost)."""
        now = self.clock()
        ids = list(self.executor.attempts)
        self.executor.shutdown()
        n = 0
        with session_scope(self.engine) as s:
            for job_id in ids:
                job = s.get(Job, job_id)
                if job is None or job.state != JobState.RUNNING:
                    continue
                result = settle_attempt(self.executor.results_dir, job.id, job.attempts)
                self.meter.charge(s, job, now)
                if result is not None:
                    apply.finish(s, job, ok=True, at=now, result=result, error=None)
                else:
                    apply.requeue(s, job, at=now, event="requeued", message="the scheduler shut down; queued again")
                    n += 1
        return n
