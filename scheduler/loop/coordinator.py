"""The scheduling loop: each cycle is load, decide (quota.decide), apply.

The phases of one cycle, in `PHASES` order (scheduler.vocab's: the exporter's phase
label set is the same tuple, and `cycle()` takes their names from it):
 1. collect:  completions from Ray (no transaction open while talking to Ray);
              capacity is refreshed from Ray here too, at most every capacity_period_s;
 2. settle:   record them: SUCCEEDED, FAILED, or ended through `apply.end_attempt`
              (requeued, or FAILED once a job's own failures reach the retry limit);
 3. load:     bring the one incremental cache (SnapshotLoader: rows and a long-lived
              quota.PolicyState) up to the database, re-reading only the jobs with a
              job event past its change cursor (not those the loop itself admitted or
              ended SUCCEEDED: it keeps the rows it wrote);
 4. decide:   `PolicyState.cycle` (the same policy code as quota.decide);
 5. admit:    reconcile with what the API changed, mark admitted jobs RUNNING and store
              every waiting job's reason; 2-5 are one short write transaction;
 6. start:    after commit: stop cancelled attempts, preempt (cancel in Ray, end the
              victims' attempts, wait until Ray freed their slices), hand admitted jobs
              to Ray; every `usage_period_s`, charge running jobs' slice-seconds.

Invariants:
- All state lives in the database, so a new loop after a crash recovers from it alone
  (scheduler.loop.recovery). Ray is never given a task it cannot start at once.
- Every write transaction the loop makes is fenced by the leader lease (`lease.fence`),
  so a server that lost the lease writes nothing.
- Memory follows the commits: the meter's charges and the watches' sets change once the
  transaction that makes them true committed (`store.after_commit`); a transaction that
  fails drops them, and the caches that cannot wait for it (the loader and its
  PolicyState, the decayed usage) are read again from the database. So a failure before a
  commit leaves memory as the database is, and one after it rolls nothing back.
- The loop never dies: a cycle that raises is logged once per distinct error, counted in
  `health()` (`failures_total`), and retried with backoff. Only losing the lease to
  another server stops it. Publishing (`on_cycle`) comes after every commit: a failure
  there is logged and counted apart (`publish_failures_total`); the cycle succeeded.
- A cycle's database work is proportional to what changed (completions, arrivals,
  admissions) and to the running jobs, not to the waiting ones.
- A job Ray refuses to place is queued again without spending a retry, held back with
  backoff, and after `max_refusals` waits with a reason until capacity changes.
- A fence marker is only ever the server's: an attempt that failed while the server still
  runs it, and whose result file is a fence, is queued again without spending a retry.
- The clock, engine and executor are injected (tests pass a FakeExecutor); the policy is
  quota's, with no second path for tests.

Checkpoints, progress and time limits of running attempts live in scheduler.loop.watch;
capacity from Ray, frameworks per node and jobs Ray refused in scheduler.loop.nodes. Per
cycle, reconcile looks only at the tracked jobs the loader re-read (all after a rebuild),
and time limits only at the running jobs that have one.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

import quota
from scheduler.loop import apply, recovery
from scheduler.runtime import jobfiles
from scheduler.runtime.executor import Completion
from scheduler.loop.nodes import LEFT_RAY, NOT_IN_RAY, RAY_REFUSED, NodeWatch  # noqa: F401 (the loop's names)
from scheduler.services.snapshot import (
    SnapshotLoader,
    active_jobs,
    event_horizon,
    running_jobs,
)
from scheduler.store import Job, JobState, session_scope
from scheduler.store.lease import LeaseLapsed, LeaseLost
from scheduler.runtime.tasks import TaskPayload
from scheduler.text import first_line
from scheduler.vocab import PHASES
from scheduler.loop.watch import TIME_LIMIT, AttemptWatch, format_seconds  # noqa: F401 (the loop's names)

log = logging.getLogger("fairgpu.loop")

COLLECT, SETTLE, LOAD, DECIDE, ADMIT, START = PHASES


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
    # per-account events, for the metrics (account ids, named by account_names)
    account_names: Mapping[int, str] = field(default_factory=dict)  # account id -> name, as loaded
    admissions: list[tuple[int, float]] = field(default_factory=list)  # (account_id, queue wait s)
    preemptions: list[tuple[int, str]] = field(default_factory=list)  # (account_id, quota.Preemption.kind)
    finishes: list[tuple[int, str]] = field(default_factory=list)  # (account_id, final state)
    usage: dict[int, float] = field(default_factory=dict)  # account_id -> slice-seconds charged
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent in each of PHASES
    ended: list[int] = field(default_factory=list)  # jobs that reached a final state (their files go)


@dataclass(frozen=True)
class LoopHealth:
    consecutive_failures: int = 0
    failures_total: int = 0
    last_error: str | None = None
    last_success_at: datetime | None = None
    failing_since: datetime | None = None
    publish_failures_total: int = 0  # cycles whose publishing (on_cycle) raised, after their commits
    last_publish_error: str | None = None


class SchedulingLoop(AttemptWatch, NodeWatch):
    def __init__(self, engine, executor, clock: Callable[[], datetime], *,
                 slices_per_gpu: int | None = None, retry_limit: int = 3, usage_period_s: float = 15.0,
                 discover: bool = True, on_cycle: Callable[[CycleReport], None] | None = None,
                 lease=None, on_lease_lost: Callable[[LeaseLost], None] | None = None, max_refusals: int = 5,
                 checkpoint_grace_s: float = 10.0):
        self.engine = engine
        self.executor = executor
        self.clock = clock
        self.slices_per_gpu = slices_per_gpu
        self.retry_limit = retry_limit
        self.usage_period_s = usage_period_s
        self.discover = discover
        self.on_cycle = on_cycle
        self.lease = lease
        self.on_lease_lost = on_lease_lost
        self.max_refusals = max_refusals
        self.checkpoint_grace_s = checkpoint_grace_s  # how long a victim may take to checkpoint
        self.progress_period_s = 1.0
        self._last_progress = float("-inf")
        self._progress_seen: dict[int, float] = {}  # job id -> mtime of the progress last copied
        self._progress_round: list[int] = []  # running jobs this round has still to look at
        self.progress_chunk = 500
        self.meter = apply.UsageMeter()
        self.loader = SnapshotLoader()
        self._last_meter = 0.0
        self._last_capacity = float("-inf")
        self.capacity_period_s = 2.0
        self.gather_s = 0.005  # after a completion, how long to wait for more before cycling
        self.wake_gather_s = 0.01  # after a submission or cancel, how long to wait for more
        self.wake_gather_full_s = 0.1  # the same when the last cycle left no slice free
        self.backoff_s = (0.5, 30.0)  # a failing cycle is retried after 0.5 s, doubling up to 30 s
        self._full = False
        self._unsettled: list[Completion] = []  # collected, but the cycle failed before recording them
        self._refused: dict[int, tuple[int, float, str]] = {}  # job id -> (refusals, retry at (monotonic), why)
        self._node_frameworks: dict[str, frozenset[str] | None] = {}  # discovered nodes' frameworks
        self._leaving: set[int] = set()  # tracked jobs whose node was gone at the last reconcile
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._health = LoopHealth()
        self._logged: dict[str, int] = {}  # distinct errors logged with their traceback (bounded)
        self.last_report: CycleReport | None = None

    # -- lifecycle --------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def health(self) -> LoopHealth:
        return self._health

    def run(self, period_s: float = 1.0) -> None:
        """Cycle until stop() or until the lease is lost: after each cycle, wait for a
        completion, a wake-up or the period. A wake-up that comes while a cycle runs is
        not lost (it is cleared before the cycle). A failing cycle is retried with backoff."""
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except LeaseLapsed:  # paused or cut off, but nobody took over: renew, then go on
                self._stop.wait(self._backoff())
                continue
            except LeaseLost as exc:
                if self.on_lease_lost is not None:
                    self.on_lease_lost(exc)  # the server says so, once
                else:
                    log.error("%s; scheduling stops here", exc)
                return
            except Exception:
                self._stop.wait(self._backoff())
                continue
            if self._stop.is_set():
                break
            self._idle(period_s)

    def run_once(self) -> CycleReport:
        """One cycle. A failure is logged once per distinct error and counted in health(),
        then re-raised for run() to back off (memory is already as the database is: see
        `_scope`). Losing the lease to another server is not counted."""
        try:
            report = self.cycle()
        except LeaseLost as exc:
            if isinstance(exc, LeaseLapsed):
                self._failed(exc)
            raise
        except Exception as exc:
            self._failed(exc)
            raise
        h = self._health
        if h.consecutive_failures:
            log.warning("scheduling cycles succeed again after %d failed", h.consecutive_failures)
        self._health = replace(self._health, consecutive_failures=0, last_success_at=report.at, failing_since=None)
        return report

    def _failed(self, exc: Exception) -> None:
        key = self._log_once(exc, "scheduling cycle failed (retried with backoff; this error is logged once)")
        h = self._health
        self._health = replace(h, consecutive_failures=h.consecutive_failures + 1,
                               failures_total=h.failures_total + 1, last_error=key,
                               failing_since=h.failing_since or self.clock())

    def _publish(self, report: CycleReport) -> None:
        """Hand the cycle's report to `on_cycle` (the publisher), after every commit of the
        cycle: a failure here is logged once per distinct error and counted on its own
        (`publish_failures_total`); it rolls nothing back and does not fail the cycle."""
        if self.on_cycle is None:
            return
        try:
            self.on_cycle(report)
        except Exception as exc:
            key = self._log_once(exc, "publishing a scheduling cycle failed (its work is committed; "
                                      "this error is logged once)")
            h = self._health
            self._health = replace(h, publish_failures_total=h.publish_failures_total + 1, last_publish_error=key)

    def _log_once(self, exc: Exception, what: str) -> str:
        """Log `exc` with its traceback the first time it is seen (a bounded set); its key."""
        first = first_line(exc)[:300]
        key = f"{type(exc).__name__}: {first}"
        if key not in self._logged and len(self._logged) < 100:
            self._logged[key] = 1
            log.exception(what)
        else:
            log.debug("%s again: %s", what.split(" (")[0], key)
        return key

    def _backoff(self) -> float:
        low, high = self.backoff_s
        return min(high, low * 2 ** max(0, self._health.consecutive_failures - 1))

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
            if not self.executor.tracked():
                self._wake.wait(min(0.05, left))
            elif self.executor.wait(min(0.05, left)):
                self.executor.wait(self.gather_s, every=True)
                return
        if self._wake.is_set() and not self._stop.is_set():
            gather = self.wake_gather_full_s if self._full else self.wake_gather_s
            if self.executor.tracked():
                self.executor.wait(gather)
            elif gather > 0:
                self._stop.wait(gather)

    @contextmanager
    def _scope(self):
        """A write transaction fenced by the lease (see scheduler.store.lease). Memory
        follows it: what its work handed `after_commit` (the meter's charges, the watches'
        sets) happens once it committed; if it fails, that is dropped, and the loader and
        the decayed usage (caches changed while the transaction reads) are read again from
        the database by the next cycle."""
        try:
            with session_scope(self.engine) as s:
                if self.lease is not None:
                    self.lease.fence(s)
                yield s
        except BaseException:
            self.loader = SnapshotLoader()
            self.meter.usage.loaded = float("-inf")
            raise

    # -- recovery and drain (scheduler.loop.recovery) ----------------------------------------
    def recover(self) -> dict[str, int]:
        return recovery.recover(self._scope, self.executor.results_dir, self.meter, now=self.clock(),
                                retry_limit=self.retry_limit, stop=recovery.last_stop(self.lease))

    def drain(self) -> int:
        return recovery.drain(self._scope, self.executor, self.meter, now=self.clock(), retry_limit=self.retry_limit,
                              checkpoint=self.checkpoint)

    # -- one cycle ----------------------------------------------------------------------
    def cycle(self) -> CycleReport:
        t0 = time.perf_counter()
        now = self.clock()
        report = CycleReport(at=now)
        phases = report.phases
        mark = t0

        def lap(name: str) -> None:
            nonlocal mark
            now_ = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now_ - mark
            mark = now_

        # 1. collect (plus any a failed cycle could not record)
        completions = self._unsettled + self.executor.poll()
        self._unsettled = completions
        if any(c.infrastructure for c in completions):
            self._last_capacity = float("-inf")  # a node may have gone: look again now
        if self.discover and time.monotonic() - self._last_capacity >= self.capacity_period_s:
            self._last_capacity = time.monotonic()
            self.refresh_capacity(now)
        lap(COLLECT)
        # 2-5 in one short write transaction: no network call inside it
        started: list = []
        reasons: dict = {}
        horizon = event_horizon(self.engine)  # PostgreSQL: the job events known committed
        with self._scope() as s:
            if completions:
                self._settle(s, completions, now, report)
            lap(SETTLE)
            loaded = self.loader.sync(s, horizon=horizon)  # the rows and PolicyState, fed what changed
            by_id = self.meter.usage.get(s, now, loaded.half_life_s, time.monotonic())
            usage = {name: by_id[i] for name, i in loaded.account_ids.items() if i in by_id}
            held = self._hold_back(loaded)
            # built only for whoever reads it (the publisher)
            snapshot = loaded.state.snapshot(now.timestamp(), usage) if self.on_cycle is not None else None
            lap(LOAD)
            decision = loaded.state.cycle(now.timestamp(), usage)  # quota.decide's code, on the state kept
            lap(DECIDE)
            stop, gone = self._reconcile(s, loaded, now, report)
            stop += self._time_out(s, loaded, now, report)
            self._copy_progress(s)
            own: list = []  # admitted rows as written (the state made them)
            if not decision.preemptions:
                started, reasons = self._admit(s, decision, loaded, now, held, rows=own)
            own_to = self.loader.event_mark(s) if own else 0
            lap(ADMIT)
        self._unsettled = []  # committed: the loop's memory may follow
        self._leaving = set(gone)
        if own:
            self.loader.note_admitted(own, own_to)
        self.loader.note_reasons(reasons)
        report.decision, report.snapshot = decision, snapshot
        report.account_names = {i: name for name, i in loaded.account_ids.items()}
        held_slices = sum(decision.allocated.get(a, 0) for a in loaded.tree.kids(None))
        self._full = 0 < loaded.capacity.total_slices <= held_slices
        # 6. Ray side: stop attempts the API cancelled, or whose node left; preempt; start
        for job_id in stop:
            self.executor.cancel(job_id)
            self.executor.forget(job_id)
        for job_id in gone:
            self.executor.cancel(job_id)  # Ray reports it, settle ends the attempt
        if decision.preemptions:
            started = self._preempt_then_admit(decision, loaded, now, report, held)
        self._start(started, now, report, loaded)
        if time.monotonic() - self._last_meter >= self.usage_period_s:
            self._meter(now, report)
        root = self.executor.results_dir
        for job_id in report.ended:
            if os.path.isdir(os.path.join(root, str(job_id))):  # one stat where nothing was written
                jobfiles.clear(root, job_id)
        lap(START)
        report.duration_s = time.perf_counter() - t0
        self.last_report = report
        self._publish(report)
        return report

    def _charge(self, s, job, until: datetime, report: CycleReport | None, rows: list | None = None,
                started_at: float | None = None) -> None:
        amount = self.meter.charge(s, job, until, rows, started_at=started_at)
        self._count_usage(report, job, amount)

    @staticmethod
    def _count_usage(report: CycleReport | None, job, amount: float) -> None:
        if report is not None and amount > 0:
            report.usage[job.account_id] = report.usage.get(job.account_id, 0.0) + amount

    def _end(self, s, job, report: CycleReport, lost: apply.Lost, rows: list | None = None) -> apply.Ended:
        ended = apply.end_attempt(s, job, self.executor.results_dir, self.meter, at=lost.charge_until or report.at,
                                  lost=lost, retry_limit=self.retry_limit, rows=rows)
        self._count_usage(report, job, ended.charged)
        if ended.state is not None:
            report.ended.append(job.id)
            report.finished += 1
            report.finishes.append((job.account_id, ended.state.value))
        return ended

    def _settle(self, s, completions: list[Completion], now: datetime, report: CycleReport) -> None:
        rows = {j.id: j for j in active_jobs(s, [c.job_id for c in completions])}
        usage: list[dict] = []
        succeeded = []  # the common case, recorded together: (job, end, result)
        for c in completions:
            job = rows.get(c.job_id)
            if job is None or job.state != JobState.RUNNING or job.attempts != c.attempt:
                self.meter.forget(s, c.job_id)
                continue  # already settled (cancelled or preempted) by someone else
            if c.ok:
                end = apply.ts(c.result.task_finished_at)
                self._charge(s, job, end, report, usage, started_at=c.result.task_started_at)
                self.meter.forget(s, job.id)
                succeeded.append((job, end, c.result.as_record()))
            elif c.refused:
                why = self._note_refusal(s, job.id, c.error)
                lost = apply.Lost("requeued", why, charge_until=now, reason=RAY_REFUSED)
                if self._end(s, job, report, lost, usage).outcome == apply.Outcome.REQUEUED:
                    report.requeued += 1
            elif c.infrastructure or c.cancelled:  # its worker or node died (or its node left)
                what = "its node left the cluster" if c.cancelled else f"lost its worker or node: {c.error}"
                lost = apply.Lost("requeued", f"attempt {job.attempts} {what}", own_fault=True, charge_until=now,
                                  started_at=c.started_at)
                if self._end(s, job, report, lost, usage).outcome == apply.Outcome.REQUEUED:
                    report.requeued += 1
            elif jobfiles.fenced(self.executor.results_dir, job.id, c.attempt):
                # its publish found a fence, but the server fences only attempts it gave up on
                # (and then the row moved on): not the job's fault, so it runs again
                lost = apply.Lost("requeued", f"attempt {job.attempts}'s result was fenced, not by the server: "
                                  "queued again (no retry spent)", charge_until=now, started_at=c.started_at)
                if self._end(s, job, report, lost, usage).outcome == apply.Outcome.REQUEUED:
                    report.requeued += 1
            else:  # the job's own code raised: it fails now (running it again would not help)
                self._charge(s, job, now, report, usage, started_at=c.started_at)
                self.meter.forget(s, job.id)
                try:
                    state = apply.finish(s, job, ok=False, at=now, result=None, error=c.error,
                                         failures=job.failures + 1)
                except apply.StaleJob:
                    continue
                report.ended.append(job.id)
                report.finished += 1
                report.finishes.append((job.account_id, state.value))
        done = apply.finish_ok_many(s, succeeded, fresh=True)  # rows read above, in this transaction
        for job, _end, result in succeeded:
            if job.id in done:
                report.ended.append(job.id)
                report.finished += 1
                report.finishes.append((job.account_id, JobState.SUCCEEDED.value))
                report.ray_start_delays.append(result.get("ray_start_delay_s", 0.0))
        apply.insert_usage(s, usage)
        if done:  # final: the loader drops them now instead of reading them back
            self.loader.note_finished(done, self.loader.event_mark(s))
            self._forget_refusals(s, done)

    # -- reconcile, admit, preempt, start -------------------------------------------------
    def _reconcile(self, s, loaded, now: datetime, report: CycleReport) -> tuple[list[int], list[int]]:
        """The database side of reconcile, on the rows just loaded: returns the attempts to
        stop in Ray (their jobs were cancelled or settled meanwhile) and those whose node left."""
        tracked = self.executor.tracked()
        if not tracked:
            return [], []
        stop, gone = [], []
        live_nodes = {n.name for n in loaded.capacity.nodes}  # the active nodes, as loaded
        # Every status change is a job event, so only the jobs this sync re-read can have
        # moved, and only a rebuild changes the nodes: after a rebuild look at every tracked
        # job, else at those re-read and those whose node was gone last cycle.
        if loaded.rebuilt:
            look = list(tracked)
        else:
            look = [j for j in {*loaded.changed, *self._leaving} if j in tracked]
        missing = [i for i in look if i not in loaded.jobs]  # finished or cancelled since
        for job in (active_jobs(s, missing) if missing else []):
            if job.state.is_finished() and job.finished_at is not None:
                self._charge(s, job, job.finished_at, report, started_at=self.executor.task_started_at(job.id))
                report.finishes.append((job.account_id, job.state.value))
                report.ended.append(job.id)
        stop.extend(missing)
        for job_id in look:
            job = loaded.jobs.get(job_id)
            if job is None:
                continue
            if job.state != JobState.RUNNING or job.attempts != tracked[job_id]:
                stop.append(job_id)  # settled by someone else (requeued): stop it in Ray
            elif self.discover and job.node not in live_nodes:
                gone.append(job_id)
        for job_id in stop:
            self.meter.forget(s, job_id)
        return stop, gone

    def _preempt_then_admit(self, decision: quota.Decision, loaded, now: datetime, report: CycleReport,
                            held: dict[int, tuple[str, str]]) -> list:
        jobs = loaded.jobs
        victims = [p.job_id for p in decision.preemptions]
        started_at = {j: self.executor.task_started_at(j) for j in victims}
        self.checkpoint([j for j in victims if started_at[j] is not None])
        for job_id in victims:
            self.executor.cancel(job_id)
        with self._scope() as s:
            for p in decision.preemptions:
                job = jobs.get(p.job_id)
                if job is None or job.state != JobState.RUNNING:
                    continue
                lost = apply.Lost("preempted", p.reason, charge_until=now, started_at=started_at.get(job.id))
                if self._end(s, job, report, lost).outcome == apply.Outcome.REQUEUED:
                    report.preempted += 1
                    report.preemptions.append((job.account_id, p.kind))
        self.executor.wait_gone(victims, timeout=10.0)
        for job_id in victims:
            self.executor.forget(job_id)
        with self._scope() as s:  # a new transaction: the API may have changed jobs since
            started, reasons = self._admit(s, decision, loaded, now, held, fresh=False)
        self.loader.note_reasons(reasons)
        return started

    def _admit(self, s, decision: quota.Decision, loaded, now: datetime, held: dict[int, tuple[str, str]],
               fresh: bool = True, rows: list | None = None) -> tuple[list, dict]:
        """Mark the admitted jobs RUNNING and store every waiting job's reason (no Ray call);
        returns the jobs to start and the reasons written. `fresh`: `loaded` was read in
        this same transaction (see transition_many); `rows`: see apply.admit_many."""
        jobs = loaded.jobs
        chosen = [(jobs[adm.request_id], adm) for adm in decision.admissions if adm.request_id in jobs]
        admitted = apply.admit_many(s, [(job, adm.node, adm.gpu_slices) for job, adm in chosen], at=now,
                                    fresh=fresh, rows=rows)
        started = [(job, adm) for job, adm in chosen if job.id in admitted]
        return started, self._write_reasons(s, decision, loaded, held, now)

    def _write_reasons(self, s, decision: quota.Decision, loaded, held: dict[int, tuple[str, str]],
                       now: datetime) -> dict:
        """Store why jobs wait, writing only what differs from what is stored. The policy
        explains per (account, size) (`quota.policy.Explained`): a group whose reason
        changed since it was last written is stored once in the wait_reason table, and a
        group with no job waiting is dropped (one whose last jobs started this cycle, in the
        next; after a rebuild, all are written afresh).
        A pending job's own reason column holds only a reason of its own (held back,
        Infeasible): a job re-read this cycle (every pending job after a rebuild) that is
        explained by its group has its own reason cleared. Returns the per-job reasons
        written."""
        jobs, pending = loaded.jobs, JobState.PENDING
        waiting: quota.policy.Explained = decision.waiting  # PolicyState.cycle's: per group
        per_job = {jid: (w.reason, w.message) for jid, w in waiting.explicit.items()}
        ids, written = loaded.account_ids, self.loader.reasons_written
        live = {(ids[account], k): why for (account, k), why in waiting.reasons.items()}
        fresh = loaded.rebuilt  # a new state: replace what is stored (written is empty)
        changed = [(key, why) for key, why in live.items() if written.get(key) != why]
        gone = [key for key in written if key not in live]
        if changed or gone or fresh:
            apply.set_group_reasons(s, changed, gone, at=now, replace_all=fresh)
        written.update(changed)
        for key in gone:
            del written[key]
        admitted = {a.request_id for a in decision.admissions}
        for jid in (jobs if fresh else loaded.changed):
            row = jobs.get(jid)
            if (row is not None and row.state == pending and row.reason is not None and jid not in admitted
                    and jid not in held and jid not in per_job):
                per_job[jid] = (None, None)  # its group's reason is the one shown
        per_job.update(held)
        changed_rows = {}  # only reasons that differ from the rows as loaded are written
        for jid, why in per_job.items():
            row = jobs.get(jid)
            if row is None or row.state != pending or (row.reason, row.reason_message) != why:
                changed_rows[jid] = why
        return apply.set_reasons(s, changed_rows)

    def _start(self, started: list, now: datetime, report: CycleReport, loaded) -> None:
        """Hand the admitted jobs to Ray, each payload with the attempt limits as loaded
        (settings host_memory_per_slice, max_processes) and its node's slices."""
        limits, node_slices = loaded.attempt, {n.name: n.slices for n in loaded.capacity.nodes} if started else {}
        for job, adm in started:  # after commit: a crash here leaves RUNNING rows that recovery requeues
            payload = replace(TaskPayload.for_job(job_id=job.id, attempt=job.attempts + 1, model=job.model,
                                                  framework=job.framework, mode=job.mode, spec=job.spec,
                                                  num_gpus=adm.num_gpus, results_dir="", submitted_at=0.0,
                                                  slices=job.slices),
                              host_memory_per_slice=limits.host_memory_per_slice,
                              max_processes=limits.max_processes, node_slices=node_slices.get(adm.node, 0))
            try:
                can = self._node_frameworks.get(adm.node)
                if job.framework is not None and can is not None and job.framework not in can:
                    raise LookupError(f"node {adm.node} cannot run {job.framework}")
                self.executor.start(payload, node=adm.node)
                self.meter.started(job.id)
                report.admitted += 1
                report.admissions.append((job.account_id, (now - job.submitted_at).total_seconds()))
            except Exception as exc:
                with self._scope() as s:
                    why = self._note_refusal(s, job.id, f"{type(exc).__name__}: {exc}")
                    fresh = s.get(Job, job.id)
                    if fresh is not None and fresh.state == JobState.RUNNING:
                        apply.requeue(s, fresh, at=now, event="requeued", message=why, reason=RAY_REFUSED,
                                      unclean_stops=fresh.unclean_stops)  # never started: counts as nothing

    def _meter(self, now: datetime, report: CycleReport) -> None:
        """Charge running jobs up to now, each from its task's own start."""
        self._last_meter = time.monotonic()
        tracked = self.executor.tracked()
        if not tracked:
            return
        with self._scope() as s:
            rows: list[dict] = []
            for job in running_jobs(s):
                if tracked.get(job.id) == job.attempts:
                    self._charge(s, job, now, report, rows, started_at=self.executor.task_started_at(job.id))
            apply.insert_usage(s, rows)
