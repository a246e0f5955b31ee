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
from scheduler.services.snapshot import SnapshotLoader, active_jobs
from scheduler.store import Job, JobState, Node, StaleJob, session_scope
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
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent in each phase of the cycle


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
        self.gather_s = 0.005  # after a completion, how long to wait for more before cycling
        self.wake_gather_s = 0.01  # after a submission or cancel, how long to wait for more
        self.wake_gather_full_s = 0.1  # the same when the last cycle left no slice free
        self._full = False
        self._unsettled: list[Completion] = []  # collected, but the cycle failed before recording them
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
        """Cycle until stop(): after each cycle, wait for a completion, a wake-up or the period.
        A wake-up that comes while a cycle runs is not lost (it is cleared before the cycle)."""
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.cycle()
            except Exception:  # keep scheduling; the next cycle starts from the database again
                log.exception("scheduling cycle failed")
                time.sleep(0.5)
            if self._stop.is_set():
                break
            self._idle(period_s)

    def _idle(self, period_s: float) -> None:
        """Wait for a completion, a wake-up or the period. After the first completion, wait
        up to `gather_s` more for the other running attempts, so one cycle settles (and
        refills) a batch of completions rather than one; after a wake-up (a submission or
        a cancel), `wake_gather_s` more (`wake_gather_full_s` when the cluster was full),
        so a burst of submissions is decided together rather than one cycle each."""
        deadline = time.monotonic() + period_s
        while not self._stop.is_set() and not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not self.executor.attempts:
                self._wake.wait(min(0.05, left))
            elif self.executor.wait(min(0.05, left)):
                self.executor.wait(self.gather_s, every=True)
                return
        if self._wake.is_set() and not self._stop.is_set():
            # a burst of submissions is decided together; when the last cycle left no slice
            # free, a submission can only matter through preemption, so wait longer (a
            # completion still ends the wait at once)
            gather = self.wake_gather_full_s if self._full else self.wake_gather_s
            if self.executor.attempts:
                self.executor.wait(gather)
            elif gather > 0:
                self._stop.wait(gather)

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
        # 1. collect (plus any a failed cycle could not record)
        completions = self._unsettled + self.executor.poll()
        self._unsettled = completions
        if any(c.infrastructure for c in completions):
            self._last_capacity = float("-inf")  # a node may have gone: look again now
        # 4. capacity first (Ray's node list costs a round trip: at most every capacity_period_s)
        if self.discover and time.monotonic() - self._last_capacity >= self.capacity_period_s:
            self._last_capacity = time.monotonic()
            self.refresh_capacity(now)
        # 2. settle, 5. load and decide, 3. and (without preemptions) 6. admit, all in one
        # short write transaction: no network call inside it, the policy inputs that did not
        # change are not rebuilt, and only jobs whose version moved are re-read. Admissions
        # are guarded by each job's version like every status change.
        started: list = []
        reasons: dict = {}
        phases = report.phases
        mark = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal mark
            now_ = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now_ - mark
            mark = now_

        lap("collect")
        with session_scope(self.engine) as s:
            if completions:
                self._settle(s, completions, now, report)
            lap("settle")
            loaded = self.loader.load(s, now, usage_by_id=lambda h: self.meter.usage.get(s, now, h, time.monotonic()))
            lap("load")
            decision = quota.decide(loaded.snapshot)
            lap("decide")
            stop, gone = self._reconcile(s, loaded, now, report)
            if not decision.preemptions:
                started, reasons = self._admit(s, decision, loaded, now)
        lap("admit")
        self._unsettled = []
        self.loader.note_reasons(reasons)
        report.decision, report.snapshot = decision, loaded.snapshot
        self._full = loaded.snapshot.capacity.total_slices > 0 and decision.free_slices(loaded.snapshot) == 0
        # 3. Ray side of reconcile: stop attempts the API cancelled, or whose node left
        for job_id in stop:
            self.executor.cancel(job_id)
            self.executor.forget(job_id)
        for job_id in gone:
            self.executor.cancel(job_id)  # Ray reports it, settle requeues
        # 6. apply
        if decision.preemptions:
            started = self._preempt_then_admit(decision, loaded, now, report)
        self._start(started, now, report)
        lap("start")
        # 7. meter
        if time.monotonic() - self._last_meter >= self.usage_period_s:
            self._meter(now, report)
        report.duration_s = time.perf_counter() - t0
        self.last_report = report
        if self.on_cycle:
            self.on_cycle(report)
        return report

    def _charge(self, s, job: Job, until: datetime, report: CycleReport | None, rows: list | None = None) -> None:
        amount = self.meter.charge(s, job, until, rows)
        if report is not None and amount > 0:
            report.usage[job.account_id] = report.usage.get(job.account_id, 0.0) + amount

    def _settle(self, s, completions: list[Completion], now: datetime, report: CycleReport) -> None:
        if not completions:
            return
        rows = {j.id: j for j in active_jobs(s, [c.job_id for c in completions])}
        usage: list[dict] = []
        succeeded = []  # the common case, recorded together: (job, end, result)
        for c in completions:
            job = rows.get(c.job_id)
            if job is None or job.state != JobState.RUNNING or job.attempts != c.attempt:
                self.meter.forget(c.job_id)
                continue  # already settled (cancelled or preempted) by someone else
            end = apply.ts(c.result["task_finished_at"]) if c.ok and c.result else now
            self._charge(s, job, end, report, usage)
            self.meter.forget(job.id)
            if c.ok:
                succeeded.append((job, end, c.result))
                continue
            try:
                if c.infrastructure or c.cancelled:
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
        done = apply.finish_ok_many(s, succeeded, fresh=True)  # rows read above, in this transaction
        for job, _end, result in succeeded:
            if job.id in done:
                report.finished += 1
                report.finishes.append((job.account_id, JobState.SUCCEEDED.value))
                report.ray_start_delays.append(result.get("ray_start_delay_s", 0.0))
        apply.insert_usage(s, usage)

    def _reconcile(self, s, loaded, now: datetime, report: CycleReport) -> tuple[list[int], list[int]]:
        """The database side of reconcile, on the rows just loaded: returns the attempts to
        stop in Ray (their jobs were cancelled or settled meanwhile) and those whose node left."""
        tracked = dict(self.executor.attempts)
        if not tracked:
            return [], []
        stop, gone = [], []
        live_nodes = {n.name for n in loaded.snapshot.capacity.nodes}  # the active nodes, as loaded
        missing = [i for i in tracked if i not in loaded.jobs]  # finished or cancelled since
        rows = list(active_jobs(s, missing)) if missing else []
        for job in rows:
            if job.state.is_finished() and job.finished_at is not None:
                self._charge(s, job, job.finished_at, report)
                report.finishes.append((job.account_id, job.state.value))
        stop.extend(missing)
        for job_id, att in tracked.items():
            job = loaded.jobs.get(job_id)
            if job is None:
                continue
            if job.state != JobState.RUNNING or job.attempts != att.attempt:
                stop.append(job_id)  # settled by someone else (requeued): stop it in Ray
            elif self.discover and job.node not in live_nodes:
                gone.append(job_id)
        for job_id in stop:
            self.meter.forget(job_id)
        return stop, gone

    def _preempt_then_admit(self, decision: quota.Decision, loaded, now: datetime, report: CycleReport) -> list:
        jobs = loaded.jobs
        victims = [p.job_id for p in decision.preemptions]
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
        with session_scope(self.engine) as s:  # a new transaction: the API may have changed jobs since
            started, reasons = self._admit(s, decision, loaded, now, fresh=False)
        self.loader.note_reasons(reasons)
        return started

    def _admit(self, s, decision: quota.Decision, loaded, now: datetime, fresh: bool = True) -> tuple[list, dict]:
        """Mark the admitted jobs RUNNING and store every waiting job's reason (no Ray call);
        returns the jobs to start and the reasons written. `fresh`: `loaded` was read in
        this same transaction (see transition_many)."""
        jobs = loaded.jobs
        chosen = [(jobs[adm.request_id], adm) for adm in decision.admissions if adm.request_id in jobs]
        admitted = apply.admit_many(s, [(job, adm.node, adm.gpu_slices) for job, adm in chosen], at=now,
                                    fresh=fresh)
        started = [(job, adm) for job, adm in chosen if job.id in admitted]
        changed = {}  # only reasons that differ from the rows as loaded are written
        pending = JobState.PENDING
        for jid, w in decision.waiting.items():
            row = jobs.get(jid)
            if row is None or row.state != pending or row.reason != w.reason or row.reason_message != w.message:
                changed[jid] = (w.reason, w.message)
        return started, apply.set_reasons(s, changed)

    def _start(self, started: list, now: datetime, report: CycleReport) -> None:
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
