"""This server's own job history as a simulator trace, and what really happened to it.

`read_history(session, now)` reads every job with its attempts through
`services.history.read` (the one reader of job events; its docstring says what starts
and ends an attempt) and gives, per job:
- arrival = `submitted_at`, slices = the job's slices, account = its (leaf) account;
- attempts = its attempts' (start, end) intervals; an open attempt counts only for a
  job still RUNNING (one of another job lost its ending event);
- duration = the attempts' summed run time, whatever the end: succeeded, failed,
  cancelled and timed-out jobs use the time they really held their slices; a job still
  RUNNING uses its time so far, up to `now`, and counts as ending at `now`.
Left out, counted by reason in `Trace.skipped` (never silently): jobs that never
started (still waiting, or cancelled or failed while waiting: no run time to replay),
and jobs whose attempts add up to no time at all.

The capacity, account tree and settings are the ones in force now; the history keeps
no record of what they were when the jobs ran. `actual_metrics` measures the real run
with the simulator's own Recorder (scheduler.sim.metrics), on the same jobs and the same
definitions, so "actual" and "simulated" differ only by the schedule.

What-if changes (`fairgpu simulate --from-db --set ACCOUNT.FIELD=VALUE`): `parse_change`
reads one (FIELD is weight, guaranteed, or max, alias cap; `max=none` removes the cap),
each value checked against its `quota.limits` range through `services.validate`;
`what_if_tree` applies them to the specs read from the database and rebuilds the tree
with the same checks as `fairgpu admin account set` (guarantees within the parent's and
the capacity, cap >= guarantee). The changed tree is only ever held in memory.

Invariants: nothing is written; the clock is the `now` argument; times in the trace are
seconds from the earliest kept arrival; a job is in the trace iff it is in `jobs`; a
malformed --set raises BadChange (a usage error), an unknown account NotFound, a value
out of range LimitError or Invalid, a tree that breaks a rule QuotaError.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlmodel import Session

from quota import (
    AccountSpec,
    AccountTree,
    Capacity,
    PendingRequest,
    QuotaError,
    RunningJob,
    Snapshot,
    limits,
)
from scheduler.services import history, validate
from scheduler.services.errors import Invalid, NotFound
from scheduler.sim.metrics import Recorder, RunMetrics
from scheduler.sim.trace import Trace, TraceJob
from scheduler.store import JobState

NEVER_STARTED = {
    JobState.PENDING: "still waiting: never started",
    JobState.CANCELLED: "cancelled before it started",
    JobState.FAILED: "failed before it started",
}


@dataclass
class RealJob:
    """One job as it really ran; the attribute names are those Recorder.finish reads."""

    id: str
    account: str
    submit: float
    slices: int
    intervals: list[tuple[float, float]]
    preemptions: int = 0

    @property
    def first_start(self) -> float:
        return self.intervals[0][0]

    @property
    def finish(self) -> float:
        return self.intervals[-1][1]

    @property
    def duration(self) -> float:
        return sum(b - a for a, b in self.intervals)


@dataclass
class History:
    trace: Trace
    jobs: list[RealJob]
    start: datetime | None  # the earliest kept arrival (trace time 0)
    read: int = 0  # jobs on record, kept or not
    skipped: dict[str, int] = field(default_factory=dict)


def read_history(session: Session, now: datetime) -> History:
    """Every job on record as a TraceJob (see the module docstring for what is left out)."""
    records = history.read(session, now=now)
    skipped: dict[str, int] = {}
    kept = []
    for rec in records:
        # an open attempt of a job no longer RUNNING lost its ending event: not replayed
        attempts = [(x.start, x.end) for x in rec.attempts if not x.open or rec.state is JobState.RUNNING]
        why = None
        if not attempts:
            why = NEVER_STARTED.get(rec.state, "never started")
        elif sum((b - a).total_seconds() for a, b in attempts) <= 0:
            why = "ran for no measurable time"
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        kept.append((rec, attempts))
    start = min((rec.submitted_at for rec, _ in kept), default=None)
    real = []
    for rec, attempts in kept:
        def rel(t: datetime) -> float:
            return (t - start).total_seconds()

        intervals = [(rel(s), rel(t)) for s, t in attempts]
        real.append(RealJob(str(rec.id), rec.account, rel(rec.submitted_at), rec.slices, intervals, rec.preemptions))
    trace = Trace([TraceJob(r.id, r.account, r.submit, r.duration, r.slices) for r in real], name="history",
                  skipped=dict(skipped))
    return History(trace, real, start, len(records), skipped)


class _Replay:
    """The real queue and running set at one instant, in the shapes the policy's state has:
    Recorder samples them through `snapshot` (and the slices per leaf account)."""

    def __init__(self, tree: AccountTree, capacity: Capacity) -> None:
        self.tree, self.capacity = tree, capacity
        self.pending: dict[str, PendingRequest] = {}
        self.running: dict[str, RunningJob] = {}

    def wait(self, j: RealJob) -> None:
        self.pending[j.id] = PendingRequest(j.id, j.account, j.slices, seq=j.submit, submitted_at=j.submit)

    def start(self, j: RealJob, t: float) -> None:
        self.pending.pop(j.id, None)
        self.running[j.id] = RunningJob(j.id, j.account, "history", ((0, j.slices),), t)

    def stop(self, j: RealJob) -> None:
        self.running.pop(j.id, None)

    def snapshot(self, now: float, usage=None) -> Snapshot:
        return Snapshot(self.tree, self.capacity, tuple(self.pending.values()), tuple(self.running.values()),
                        dict(usage or {}), now)

    @property
    def pending_slices(self) -> dict[str, int]:
        return _by_account(self.pending.values())

    @property
    def running_slices(self) -> dict[str, int]:
        return _by_account(self.running.values())


def _by_account(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x.account] = out.get(x.account, 0) + x.slices
    return out


def actual_metrics(jobs: list[RealJob], tree: AccountTree, capacity: Capacity, samples: int = 720) -> RunMetrics:
    """What really happened, measured like a simulated run (scheduler.sim.metrics): the same
    sample grid, contended window, entitlements (from `tree` and `capacity`) and waits."""
    leaves = set(tree.leaves())
    jobs = [j for j in jobs if j.account in leaves]
    replay = _Replay(tree, capacity)
    first = min((j.submit for j in jobs), default=0.0)
    last = max((j.finish for j in jobs), default=first)
    rec = Recorder(tree, capacity, replay, start=first, sample_every=max((last - first) / max(samples, 1), 1.0))
    # (time, order, job, last attempt?): at one instant ends first (order 0), then
    # arrivals (1), then starts (2), as the engine applies them
    changes: list[tuple[float, int, int, bool]] = []
    for k, j in enumerate(jobs):
        changes.append((j.submit, 1, k, False))
        for n, (s, t) in enumerate(j.intervals):
            changes.append((s, 2, k, False))
            changes.append((t, 0, k, n + 1 == len(j.intervals)))
    changes.sort(key=lambda c: (c[0], c[1]))
    for t, order, k, last_one in changes:
        j = jobs[k]
        rec.advance(t)
        if order == 1:
            replay.wait(j)
        elif order == 2:
            replay.start(j, t)
            rec.change(j.account, t, j.slices)
        else:  # preempted or requeued: waiting again; after its last attempt: gone
            replay.stop(j)
            if not last_one:
                replay.wait(j)
            rec.change(j.account, t, -j.slices)
    rec.preemptions = sum(j.preemptions for j in jobs)
    return rec.finish(jobs)


def slice_hours(jobs: list[RealJob], tree: AccountTree) -> dict[str, float]:
    """Slice-hours each institution (top-level account) really held."""
    out: dict[str, float] = {}
    leaves = set(tree.leaves())
    for j in jobs:
        if j.account in leaves:
            top = tree.top(j.account)
            out[top] = out.get(top, 0.0) + j.duration * j.slices / 3600.0
    return out


# --set FIELD: (AccountSpec attribute, its range in quota.limits)
FIELDS = {"weight": ("weight", limits.WEIGHT), "guaranteed": ("guaranteed", limits.GUARANTEED),
          "max": ("cap", limits.MAX_SLICES), "cap": ("cap", limits.MAX_SLICES)}


class BadChange(ValueError):
    """A --set that is not ACCOUNT.FIELD=VALUE with a known FIELD (a usage error)."""


@dataclass(frozen=True)
class Change:
    account: str
    attr: str  # the AccountSpec attribute
    value: float | int | None
    text: str  # as given, for messages


def parse_change(text: str) -> Change:
    left, eq, value = text.partition("=")
    account, dot, name = left.rpartition(".")  # account names may hold '.', field names never do
    if not (eq and dot and account and name and value):
        raise BadChange(f"--set {text!r}: expected ACCOUNT.FIELD=VALUE, e.g. uni-north.weight=3")
    if name not in FIELDS:
        raise BadChange(f"--set {text!r}: unknown field {name!r} (weight, guaranteed or max)")
    validate.lookup_name(account, "--set account")
    attr, rng = FIELDS[name]
    if attr == "cap" and value == "none":
        return Change(account, attr, None, text)
    try:
        number: float | int = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise Invalid(f"--set {text}: {rng.field} must be {rng.describe()} (got {value!r})") from None
    validate.number(rng, number, f"--set {text}: {rng.field}")
    return Change(account, attr, float(number) if not rng.integer else number, text)


def what_if_tree(specs: list[AccountSpec], changes: list[Change], capacity_slices: int) -> AccountTree:
    """The tree with `changes` applied in order, validated as a real change would be."""
    by_name = {spec.name: spec for spec in specs}
    for c in changes:
        if c.account not in by_name:
            raise NotFound(f"--set {c.text}: unknown account {c.account}")
        by_name[c.account] = replace(by_name[c.account], **{c.attr: c.value})
    try:
        return AccountTree.build(by_name.values(), capacity_slices or None)
    except QuotaError as exc:  # the same class (and exit code), with the changes that caused it
        raise type(exc)(f"with --set {' '.join(c.text for c in changes)}: {exc}") from None
