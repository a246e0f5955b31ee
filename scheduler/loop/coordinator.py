"""The scheduling loop: each cycle is load, decide (quota.decide), apply.

`SchedulingLoop` only sequences. The phases of one cycle are `scheduler.vocab.PHASES`, in
order (`cycle()` runs them from that tuple; the exporter's `phase` label set is the same):
 1. collect:  completions from Ray (no transaction open while talking to Ray); nodes that
              joined or left Ray change capacity here (NodeWatch, at most every 2 s);
 2. settle:   record them (scheduler.loop.settle): SUCCEEDED, FAILED, or ended through
              `end_attempt`; and end the held attempts of a previous leader that stopped;
 3. load:     bring the one incremental cache (SnapshotLoader: rows and a long-lived
              quota.PolicyState) up to the database; the jobs NodeWatch holds back leave it;
 4. decide:   `PolicyState.cycle` (the same policy code as quota.decide);
 5. admit:    reconcile with what the API changed and end attempts past their time limit
              (AttemptWatch), mark admitted jobs RUNNING, store why jobs wait (reasons);
              2-5 are one short write transaction;
 6. start:    after commit: stop cancelled attempts, preempt (cancel in Ray, end the
              victims' attempts, wait until Ray freed their slices), hand admitted jobs
              to Ray; every `usage_period_s`, charge running jobs' slice-seconds (RaySide).
Its collaborators own their state and are handed what they need (the executor, the meter,
`transaction`, `end_attempt`, a monotonic clock): `AttemptWatch` (scheduler.loop.watch),
`NodeWatch` (.nodes), `RaySide` (.start), `Wakeup` (.wakeup: when to cycle), `Health` and
`CycleReport` (.report); `settle` and `write_reasons` (.reasons) are functions of a phase.

Invariants:
- All state lives in the database, so a new loop after a crash recovers from it alone
  (scheduler.loop.recovery). Ray is never given a task it cannot start at once.
- Every write transaction is the loop's `transaction()`, fenced by the leader lease, so a
  server that lost the lease writes nothing.
- Ending an attempt the loop gives up on has one path, `end_attempt` (apply.end_attempt
  plus the report's one bookkeeping function, `CycleReport.count`).
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
- The clock, the monotonic clock of its timers, the engine and the executor are injected
  (tests pass a FakeExecutor); the policy is quota's, with no second path for tests.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import quota
from scheduler.loop import apply, recovery
from scheduler.loop.nodes import NodeWatch
from scheduler.loop.reasons import write_reasons
from scheduler.loop.settle import settle
from scheduler.loop.start import RaySide
from scheduler.loop.report import CycleReport, Health, LoopHealth
from scheduler.loop.wakeup import Wakeup
from scheduler.loop.watch import AttemptWatch
from scheduler.runtime.executor import Completion
from scheduler.services.snapshot import SnapshotLoader, Synced, event_horizon
from scheduler.store import session_scope
from scheduler.store.lease import LeaseLapsed, LeaseLost
from scheduler.vocab import PHASES

log = logging.getLogger("fairgpu.loop")

COLLECT, SETTLE, LOAD, DECIDE, ADMIT, START = PHASES


@dataclass
class _Run:
    """One cycle's working state, handed from phase to phase."""

    report: CycleReport
    s: object = None  # the write transaction of settle .. admit
    completions: list[Completion] = field(default_factory=list)
    horizon: object = None
    loaded: Synced | None = None
    usage: dict = field(default_factory=dict)  # account name -> decayed usage
    held: dict = field(default_factory=dict)  # job id -> (reason, message): held back from the policy
    decision: quota.Decision | None = None
    stop: list[int] = field(default_factory=list)  # attempts to stop in Ray
    gone: list[int] = field(default_factory=list)  # attempts whose node left
    started: list = field(default_factory=list)  # (job, admission) to hand to Ray
    reasons: dict = field(default_factory=dict)  # per-job reasons written
    own: list = field(default_factory=list)  # admitted rows as written (the state made them)
    own_to: int = 0
    mark: float = field(default_factory=time.perf_counter)

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.phases[phase] = self.report.phases.get(phase, 0.0) + now - self.mark
        self.mark = now


class SchedulingLoop:
    """Runs the cycle's phases over its collaborators (see the module)."""

    def __init__(self, engine, executor, clock: Callable[[], datetime], *,
                 slices_per_gpu: int | None = None, retry_limit: int = 3, usage_period_s: float = 15.0,
                 discover: bool = True, on_cycle: Callable[[CycleReport], None] | None = None,
                 lease=None, on_lease_lost: Callable[[LeaseLost], None] | None = None, max_refusals: int = 5,
                 checkpoint_grace_s: float = 10.0, monotonic: Callable[[], float] = time.monotonic):
        self.engine, self.executor, self.clock, self.monotonic = engine, executor, clock, monotonic
        self.retry_limit = retry_limit
        self.on_cycle = on_cycle
        self.lease = lease
        self.on_lease_lost = on_lease_lost
        self.backoff_s = (0.5, 30.0)  # a failing cycle is retried after 0.5 s, doubling up to 30 s
        self.meter = apply.UsageMeter()
        self.held = recovery.Held(executor.results_dir)  # fenced attempts that may still run (recovery)
        self.loader = SnapshotLoader()
        self.attempts = AttemptWatch(executor, self.meter, self.end_attempt, discover=discover,
                                     checkpoint_grace_s=checkpoint_grace_s, monotonic=monotonic)
        self.nodes = NodeWatch(executor, self.transaction, slices_per_gpu=slices_per_gpu, max_refusals=max_refusals,
                               discover=discover, monotonic=monotonic)
        self.ray_side = RaySide(executor, self.meter, self.nodes, self.transaction, self.end_attempt,
                                self.attempts.checkpoint, usage_period_s=usage_period_s,
                                stop_grace_s=checkpoint_grace_s, monotonic=monotonic)
        self.wakeup = Wakeup(executor)
        self._health = Health()
        self._unsettled: list[Completion] = []  # collected, but the cycle failed before recording them
        self.last_report: CycleReport | None = None

    # -- lifecycle --------------------------------------------------------------------
    def wake(self) -> None:
        self.wakeup.wake()

    def stop(self) -> None:
        self.wakeup.stop()

    def health(self) -> LoopHealth:
        return self._health.now

    def run(self, period_s: float = 1.0) -> None:
        """Cycle until stop() or until the lease is lost, waiting in between (Wakeup). A
        failing cycle, or a lapsed lease (paused, nobody took over), is retried with backoff."""
        while not self.wakeup.stopped:
            self.wakeup.cycle_begins()
            try:
                self.run_once()
            except LeaseLapsed:
                self.wakeup.sleep(self._health.backoff(*self.backoff_s))
                continue
            except LeaseLost as exc:
                if self.on_lease_lost is not None:
                    self.on_lease_lost(exc)  # the server says so, once
                else:
                    log.error("%s; scheduling stops here", exc)
                return
            except Exception:
                self.wakeup.sleep(self._health.backoff(*self.backoff_s))
                continue
            if not self.wakeup.stopped:
                self.wakeup.idle(period_s)

    def run_once(self) -> CycleReport:
        """One cycle. A failure is logged once per distinct error and counted in health(),
        then re-raised for run() to back off (memory is already as the database is: see
        `transaction`). Losing the lease to another server is not counted."""
        try:
            report = self.cycle()
        except Exception as exc:
            if not isinstance(exc, LeaseLost) or isinstance(exc, LeaseLapsed):
                self._health.failed(exc, self.clock())
            raise
        self._health.succeeded(report.at)
        return report

    @contextmanager
    def transaction(self):
        """A write transaction fenced by the lease (see scheduler.store.lease). Memory
        follows it: what its work handed `after_commit` happens once it committed; if it
        fails, that is dropped, and the loader and the decayed usage (caches changed while
        the transaction reads) are read again from the database by the next cycle."""
        try:
            with session_scope(self.engine) as s:
                if self.lease is not None:
                    self.lease.fence(s)
                yield s
        except BaseException:
            self.loader = SnapshotLoader()
            self.meter.usage.loaded = float("-inf")
            raise

    def recover(self) -> dict[str, int]:
        return recovery.recover(self.transaction, self.executor.results_dir, self.meter, now=self.clock(),
                                retry_limit=self.retry_limit, stop=recovery.last_stop(self.lease), held=self.held,
                                gone=recovery.holder_gone(self.lease))

    def drain(self) -> int:
        return recovery.drain(self.transaction, self.executor, self.meter, now=self.clock(),
                              retry_limit=self.retry_limit, checkpoint=self.attempts.checkpoint)

    # -- one cycle ----------------------------------------------------------------------
    def cycle(self) -> CycleReport:
        """The phases, in PHASES order: settle to admit in one write transaction (no network
        call in it); start after its commit, once the loop's memory followed it."""
        t0 = time.perf_counter()
        run = _Run(CycleReport(at=self.clock()), mark=t0)
        steps = {COLLECT: self._collect, SETTLE: self._settle, LOAD: self._load, DECIDE: self._decide,
                 ADMIT: self._admit, START: self._start}
        with ExitStack() as transaction:
            for phase in PHASES:
                if phase == SETTLE:
                    run.horizon = event_horizon(self.engine)  # PostgreSQL: the job events known committed
                    run.s = transaction.enter_context(self.transaction())
                elif phase == START:
                    transaction.close()  # commits
                    self._committed(run)
                steps[phase](run)
                run.lap(phase)
        run.report.duration_s = time.perf_counter() - t0
        self.last_report = run.report
        if self.on_cycle is not None:
            try:  # after every commit of the cycle: a failure here rolls nothing back
                self.on_cycle(run.report)
            except Exception as exc:
                self._health.publish_failed(exc)
        return run.report

    def _collect(self, run: _Run) -> None:
        """Ray's completions (plus any a failed cycle could not record); capacity if due."""
        run.completions = self._unsettled = self._unsettled + self.executor.poll()
        if any(c.infrastructure for c in run.completions):
            self.nodes.look_again()  # a node may have gone
        self.nodes.refresh_if_due(run.report.at)

    def _settle(self, run: _Run) -> None:
        due = self.held.due(run.report.at) if self.held else None
        if due:  # fenced attempts a previous leader left have stopped: end them (recovery.Held)
            for job, ended in self.held.release(run.s, due, self.meter, now=run.report.at,
                                                retry_limit=self.retry_limit):
                run.report.count(job, charged=ended.charged, state=ended.state)
                run.report.requeued += ended.outcome == apply.Outcome.REQUEUED
            self.wake()  # their slices are free: decide again at once
        if not run.completions:
            return
        done = settle(run.s, run.completions, run.report, meter=self.meter, results_dir=self.executor.results_dir,
                      end=self.end_attempt, note_refusal=self.nodes.note_refusal)
        if done:  # final: the loader drops them now instead of reading them back
            self.loader.note_finished(done, self.loader.event_mark(run.s))
            self.nodes.forget_refusals(run.s, done)

    def _load(self, run: _Run) -> None:
        now = run.report.at
        run.loaded = loaded = self.loader.sync(run.s, horizon=run.horizon)  # rows and PolicyState, fed what changed
        by_id = self.meter.usage.get(run.s, now, loaded.half_life_s, self.monotonic())
        run.usage = {name: by_id[i] for name, i in loaded.account_ids.items() if i in by_id}
        run.held = self.nodes.hold_back(loaded, self.loader.by_framework)
        loaded.changed.extend(self.loader.withhold(set(run.held)))  # released now: their reason is written again
        if self.on_cycle is not None:  # built only for whoever reads it (the publisher)
            run.report.snapshot = loaded.state.snapshot(now.timestamp(), run.usage)

    def _decide(self, run: _Run) -> None:
        run.decision = run.loaded.state.cycle(run.report.at.timestamp(), run.usage)  # quota.decide's code

    def _admit(self, run: _Run) -> None:
        s, loaded, report = run.s, run.loaded, run.report
        run.stop, run.gone = self.attempts.reconcile(s, loaded, report)
        timed_out = self.attempts.time_out(s, loaded, self.loader.timed, report.at, report)
        if timed_out:
            run.stop += timed_out
            self.wake()  # their slices are free: decide again at once
        self.attempts.copy_progress(s)
        if not run.decision.preemptions:
            run.started, run.reasons = self._admit_rows(s, run, fresh=True, rows=run.own)
        run.own_to = self.loader.event_mark(s) if run.own else 0

    def _admit_rows(self, s, run: _Run, fresh: bool, rows: list | None = None) -> tuple[list, dict]:
        """Mark the admitted jobs RUNNING and store every waiting job's reason (no Ray call);
        returns the jobs to start and the reasons written. `fresh`: `run.loaded` was read in
        this same transaction (see transition_many); `rows`: see apply.admit_many."""
        jobs, decision = run.loaded.jobs, run.decision
        chosen = [(jobs[adm.request_id], adm) for adm in decision.admissions if adm.request_id in jobs]
        admitted = apply.admit_many(s, [(job, adm.node, adm.gpu_slices) for job, adm in chosen], at=run.report.at,
                                    fresh=fresh, rows=rows)
        reasons = write_reasons(s, decision, run.loaded, run.held, self.loader.reasons_written, run.report.at)
        return [(job, adm) for job, adm in chosen if job.id in admitted], reasons

    def _committed(self, run: _Run) -> None:
        """The cycle's transaction committed: the loop's memory follows it."""
        self._unsettled = []
        if run.own:
            self.loader.note_admitted(run.own, run.own_to)
        self.loader.note_reasons(run.reasons)
        report, loaded = run.report, run.loaded
        report.decision = run.decision
        report.account_names = {i: name for name, i in loaded.account_ids.items()}
        held_slices = sum(run.decision.allocated.get(a, 0) for a in loaded.tree.kids(None))
        self.wakeup.full = 0 < loaded.capacity.total_slices <= held_slices

    def _start(self, run: _Run) -> None:
        """Ray side (RaySide): stop attempts the API cancelled, or whose node left; preempt,
        then admit in a new transaction (the API may have changed jobs since); start; meter
        if due; then the ended jobs' files go."""
        self.ray_side.stop(run.stop, run.gone)
        if run.decision.preemptions:
            self.ray_side.preempt(run.decision.preemptions, run.loaded.jobs, run.report)
            with self.transaction() as s:
                run.started, reasons = self._admit_rows(s, run, fresh=False)
            self.loader.note_reasons(reasons)
        self.ray_side.hand_over(run.started, run.loaded, run.report)
        self.ray_side.meter_if_due(run.report)
        self.ray_side.clear_files(run.report.ended)

    def end_attempt(self, s, job, report: CycleReport, lost: apply.Lost, rows: list | None = None) -> apply.Ended:
        """End an attempt the loop gives up on (`apply.end_attempt`) and book it in `report`."""
        ended = apply.end_attempt(s, job, self.executor.results_dir, self.meter, at=lost.charge_until or report.at,
                                  lost=lost, retry_limit=self.retry_limit, rows=rows)
        report.count(job, charged=ended.charged, state=ended.state)
        return ended
