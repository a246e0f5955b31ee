"""Apply: carry a Decision and Ray's completions into the database (the last step of
load, decide, apply). Each function runs one short transaction and makes no network call.

Invariants:
- Job status changes only through scheduler.store.transition (guarded by version);
  a StaleJob means the API changed the job meanwhile (e.g. cancelled it): skip it.
- Usage is charged in slice-seconds for exactly the time an attempt held its slices,
  from its task's start to its end, whichever server led meanwhile: the meter remembers
  up to when each running job was charged, and where it does not follow the attempt (a
  server took it over) it starts from the attempt's last usage record, whoever wrote it.
  Its memory follows the commits (`store.after_commit`), so a failed transaction is
  charged again in full and a committed one never. A fenced attempt that ran on after
  its leader stopped is charged up to its own end (scheduler.loop.recovery, `Held`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

import sqlalchemy as sa
from sqlmodel import Session, select

from quota import decay_factor
from scheduler.runtime.jobfiles import settle_attempt
from scheduler.services.usage import decayed_by_account
from scheduler.store import (
    Job,
    JobEvent,
    JobState,
    StaleJob,
    UsageRecord,
    WaitReason,
    add_event,
    after_commit,
    transition,
)
from scheduler.store import jobrow
from scheduler.store.bulk import execute_many
from scheduler.store.transitions import Move, running_values, transition_many

log = logging.getLogger("fairgpu.apply")


def ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@dataclass
class DecayedUsage:
    """Decayed own usage per account id, kept in memory between cycles.

    Reloaded from the usage records every `reload_s` (so CSV imports by an admin are
    seen) or when the half-life changes; in between, charges are added as they are
    recorded and the whole is decayed forward: V(now) = V(t) * 2^(-(now - t) / h).
    """

    reload_s: float = 60.0
    values: dict[int, float] = field(default_factory=dict)
    at: float = 0.0
    half_life_s: float = 0.0
    loaded: float = float("-inf")

    def get(self, session: Session, now: datetime, half_life_s: float, clock_s: float) -> dict[int, float]:
        if half_life_s != self.half_life_s or clock_s - self.loaded >= self.reload_s:
            self._reload(session, now, half_life_s, clock_s)
        t = now.timestamp()
        if t > self.at:
            f = decay_factor(t - self.at, half_life_s)
            self.values = {k: v * f for k, v in self.values.items()}
            self.at = t
        return self.values

    def _reload(self, session: Session, now: datetime, half_life_s: float, clock_s: float) -> None:
        ids = dict(session.connection().execute(sa.text("SELECT name, id FROM account")).all())
        by_name = decayed_by_account(session, now, half_life_s)
        self.values = {ids[n]: v for n, v in by_name.items() if n in ids}
        self.at, self.half_life_s, self.loaded = now.timestamp(), half_life_s, clock_s

    def add(self, account_id: int, amount: float, at: datetime) -> None:
        if self.half_life_s <= 0:
            return
        self.values[account_id] = self.values.get(account_id, 0.0) + amount * decay_factor(
            self.at - at.timestamp(), self.half_life_s)


_USAGE = UsageRecord.__table__
_INSERT_EVENT = JobEvent.__table__.insert()


@dataclass
class UsageMeter:
    """Up to when each running job's slice-seconds have been charged (epoch seconds).

    A job is charged from its task's own start (the task's start marker or its result),
    not from its admission: Ray's cold start is not the institution's usage. Charging an
    attempt whose start is not known (no `started_at`, no earlier charge of the same
    attempt on record) charges nothing.

    `charge` and `forget` are staged on their session and reach `charged_until` once it
    commits (`store.after_commit`; within the transaction its own reads see them): a
    transaction that fails leaves the meter where the usage records are, so what it
    charged is charged again, once. (`usage`, the decayed sums, takes charges at once; the
    loop reloads it from the records after a failed transaction.)"""

    charged_until: dict[int, float] = field(default_factory=dict)  # as committed
    usage: DecayedUsage = field(default_factory=DecayedUsage)
    handed: set[int] = field(default_factory=set)  # jobs whose current attempt this server handed to Ray

    def _staged(self, session: Session) -> dict[int, float | None]:
        """This transaction's changes: job id -> charged until, or None (forgotten)."""
        key = ("fairgpu.meter", id(self))
        staged = session.info.get(key)
        if staged is None:
            staged = session.info[key] = {}
            after_commit(session, lambda: self._commit(staged))
        return staged

    def _commit(self, staged: dict[int, float | None]) -> None:
        for job_id, until in staged.items():
            if until is None:
                self.charged_until.pop(job_id, None)
                self.handed.discard(job_id)
            else:
                self.charged_until[job_id] = until

    def started(self, job_id: int) -> None:
        """This server handed the job's new attempt to Ray: no usage record of the attempt
        can predate the meter, so charging it needs no look at the records."""
        self.handed.add(job_id)

    def charge(self, session: Session, job: Job, until: datetime, rows: list | None = None,
               started_at: float | None = None) -> float:
        """Charge `job` up to `until`; the usage record is inserted now, or appended to
        `rows` for the caller to insert with `insert_usage` in the same transaction.
        Where the meter does not follow the job, it starts from this attempt's last usage
        record (after a restart), else from `started_at` (the task's own start)."""
        staged = self._staged(session)
        start = staged[job.id] if job.id in staged else self.charged_until.get(job.id)
        if start is None:
            handed = job.id in self.handed and job.id not in staged  # not forgotten in this transaction
            last = None if handed else session.exec(
                select(sa.func.max(UsageRecord.at)).where(UsageRecord.job_id == job.id)
            ).one()
            if last is not None and job.started_at is not None and last >= job.started_at:
                start = last.timestamp()
            elif started_at is not None:
                start = float(started_at)
            else:
                return 0.0  # this attempt's task is not known to have started: nothing to charge
        # to the microsecond (datetimes' resolution): an epoch float's rounding is no usage
        seconds = max(0.0, round(until.timestamp() - start, 6))
        amount = seconds * job.slices
        if amount > 0:
            row = {"account_id": job.account_id, "job_id": job.id, "slice_seconds": amount, "at": until}
            if rows is None:
                session.connection().execute(_USAGE.insert(), row)
            else:
                rows.append(row)
            self.usage.add(job.account_id, amount, until)
        staged[job.id] = max(start, until.timestamp())
        return amount

    def forget(self, session: Session, job_id: int) -> None:
        """The job's attempt is over (or followed by someone else): once `session` commits."""
        self._staged(session)[job_id] = None


_INSERT_USAGE = _USAGE.insert()


def insert_usage(session: Session, rows: list[dict]) -> None:
    execute_many(session.connection(), _INSERT_USAGE, rows)


def _admit_args(node: str, gpu_slices) -> dict:
    return {"node": node, "gpu": gpu_slices[0][0], "gpu_slices": [list(x) for x in gpu_slices],
            "message": f"on node {node[:12]}, GPU slices {list(map(list, gpu_slices))}"}


def admit_many(session: Session, admissions: list[tuple], *, at: datetime, fresh: bool = False,
               rows: list | None = None) -> set[int]:
    """`admit` for many (job, node, gpu_slices) at once; returns the ids admitted (a
    stale job is skipped, as `admit` would raise StaleJob). `fresh`: see transition_many.
    `rows`: the jobs are JobRows (scheduler.store.jobrow); each admitted one is appended
    as the UPDATE leaves it (`transitions.running_values`: what a move to RUNNING sets,
    written there once), so the caller need not read it back."""
    moves = []
    for job, node, gpu_slices in admissions:
        args = _admit_args(node, gpu_slices)
        message = args.pop("message")
        moves.append(Move(job, at, message, args))
    done = transition_many(session, moves, JobState.RUNNING, fresh=fresh)
    if rows is not None:
        dialect = session.get_bind().dialect
        for m in done:
            values = running_values(m.job, at=m.at, message=m.message, **m.fields)
            values["gpu_slices_json"] = jobrow.raw_json(values["gpu_slices"], dialect)
            rows.append(m.job._replace(**{f: values[f] for f in m.job._fields if f in values}))
    return {m.job.id for m in done}


def started_event(job_id: int, result: dict | None) -> dict | None:
    """The "started" event of a finished attempt (when Ray started its task, and how long
    after it was handed over), as a job_event row; None where its result does not say."""
    if not result or not result.get("task_started_at"):
        return None
    return {"job_id": job_id, "kind": "started", "at": ts(result["task_started_at"]),
            "message": f"Ray started it {result.get('ray_start_delay_s', 0):.3f} s after it was handed over"}


def finish_ok_many(session: Session, finished: list[tuple], *, fresh: bool = False) -> set[int]:
    """`finish(ok=True)` for many (job, at, result) at once, with their "started" events;
    returns the ids finished (stale jobs skipped). `fresh`: see transition_many."""
    moves = [Move(job, at, None, {"result": result, "error": None}) for job, at, result in finished]
    done = transition_many(session, moves, JobState.SUCCEEDED, fresh=fresh)
    started = [e for m in done if (e := started_event(m.job.id, m.fields["result"])) is not None]
    execute_many(session.connection(), _INSERT_EVENT, started)
    return {m.job.id for m in done}


def requeue(session: Session, job, *, at: datetime, event: str, message: str,
            failures: int | None = None, reason: str | None = None, unclean_stops: int | None = None) -> None:
    """Back to PENDING in its place: the job keeps its queue_seq, so requeued jobs wait in
    their original submission order (then id), however many come back at once."""
    fields = {}
    if failures is not None and failures != job.failures:
        fields["failures"] = failures
    if unclean_stops is not None:  # else 0: any other end of an attempt (store.transitions)
        fields["unclean_stops"] = unclean_stops
    transition(session, job, JobState.PENDING, at=at, event=event, message=message, refresh=False,
               reason=reason, **fields)


def finish(session: Session, job, *, ok: bool, at: datetime, result: dict | None, error: str | None,
           failures: int | None = None) -> JobState:
    event = started_event(job.id, result)
    if event is not None:
        add_event(session, job.id, event["kind"], event["message"], event["at"])
    state = JobState.SUCCEEDED if ok else JobState.FAILED
    extra = {"failures": failures} if failures is not None else {}
    transition(session, job, state, at=at, result=result, error=error, refresh=False,
               message=None if ok else (error or "failed")[:500], **extra)
    return state


class Outcome(str, Enum):
    FINISHED = "finished"  # its result was there: it succeeded after all
    REQUEUED = "requeued"
    FAILED = "failed"  # it lost its last retry
    ENDED = "ended"  # it ended in the state the caller gave (a time limit: TIMEOUT)
    STALE = "stale"  # someone else settled it meanwhile


@dataclass(frozen=True)
class Lost:
    """Why the server is ending an attempt whose task it no longer follows.

    `event` is the job event written ("preempted" or "requeued"). `own_fault`: the job's
    worker or node died, which spends one of its retries; a restart, a drain, a
    preemption or Ray refusing a placement spends none (docs/service.md). `charge_until`:
    up to when its slices were held (None: nothing more to charge, e.g. after a crash)."""

    event: str
    message: str
    own_fault: bool = False
    charge_until: datetime | None = None
    started_at: float | None = None  # when the task started, if the server saw it (epoch s)
    reason: str | None = None  # the pending reason it waits with (or ends with), if any
    final: JobState | None = None  # end in this state instead of queueing again (TIMEOUT)
    unclean_stops: int | None = None  # recovery: the job's unclean stops in a row to store (None: 0)


@dataclass(frozen=True)
class Ended:
    outcome: Outcome
    charged: float  # slice-seconds charged now
    state: JobState | None = None  # the final state, when it finished or failed


def end_attempt(session: Session, job, results_dir: str, meter: UsageMeter, *, at: datetime, lost: Lost,
                retry_limit: int, rows: list | None = None) -> Ended:
    """The one owner of "result there? finish : requeue" for an attempt the server is
    giving up on (recovery, a lost worker or node, preemption, drain). It settles the
    attempt's result file once and for all (`settle_attempt` fences it if absent), charges
    usage, and moves the job: SUCCEEDED if the task had finished, else PENDING in its place
    in its queue (`requeue`), or FAILED once its own failures reach `retry_limit`. A job someone else
    settled meanwhile is left as it is (STALE)."""
    saved = settle_attempt(results_dir, job.id, job.attempts)
    try:
        if saved is not None:  # it finished before the server lost it
            end = ts(saved["task_finished_at"]) if saved.get("task_finished_at") else at
            charged = meter.charge(session, job, end, rows, started_at=saved.get("task_started_at"))
            state = finish(session, job, ok=True, at=end, result=saved, error=None)
            return Ended(Outcome.FINISHED, charged, state)
        charged = (meter.charge(session, job, lost.charge_until, rows, started_at=lost.started_at)
                   if lost.charge_until is not None else 0.0)
        failures = job.failures + (1 if lost.own_fault else 0)
        if lost.final is not None:
            kept = {} if lost.unclean_stops is None else {"unclean_stops": lost.unclean_stops}
            transition(session, job, lost.final, at=at, event=lost.event, reason=lost.reason, message=lost.message,
                       error=lost.message, refresh=False, **kept)
            return Ended(Outcome.ENDED, charged, lost.final)
        if lost.own_fault and failures >= retry_limit:
            state = finish(session, job, ok=False, at=at, result=None, failures=failures,
                           error=f"gave up after {failures} lost attempts: {lost.message}")
            return Ended(Outcome.FAILED, charged, state)
        requeue(session, job, at=at, event=lost.event, message=lost.message, failures=failures, reason=lost.reason,
                unclean_stops=lost.unclean_stops)
        return Ended(Outcome.REQUEUED, charged)
    except StaleJob:
        return Ended(Outcome.STALE, 0.0)
    finally:
        meter.forget(session, job.id)


_J = Job.__table__.c
# One job per row of an executemany: `id IN (...)` next to `state = 'PENDING'` lets SQLite
# walk the state index (every pending job) instead of the primary key.
_SET_REASON = Job.__table__.update().where(
    _J.id == sa.bindparam("job_id"), _J.state == JobState.PENDING,
).values(reason=sa.bindparam("new_reason"), reason_message=sa.bindparam("new_message"))


_SET_PROGRESS = Job.__table__.update().where(_J.id == sa.bindparam("job_id"), _J.state == JobState.RUNNING).values(
    progress=sa.bindparam("new_progress", type_=_J.progress.type))


def set_progress(session: Session, job_id: int, progress: dict) -> None:
    """A running job's latest progress (no version bump: it is not a status change)."""
    session.connection().execute(_SET_PROGRESS, {"job_id": job_id, "new_progress": progress})


_W = WaitReason.__table__
_DELETE_GROUP = _W.delete().where(_W.c.account_id == sa.bindparam("g_account"), _W.c.slices == sa.bindparam("g_slices"))
_INSERT_GROUP = _W.insert()


def set_group_reasons(session: Session, changed: list[tuple[tuple[int, int], tuple[str, str]]],
                      gone=(), *, at: datetime, replace_all: bool = False) -> None:
    """Store the reason of each changed (account id, slices) group in the wait_reason table
    and drop the groups `gone` (no job of theirs waits now); `replace_all` drops every
    stored group first (the caller gives them all). A few rows, whatever the queue's size."""
    conn = session.connection()
    if replace_all:
        conn.execute(_W.delete())
    else:
        execute_many(conn, _DELETE_GROUP, [{"g_account": a, "g_slices": k} for a, k in
                                           [key for key, _why in changed] + list(gone)])
    execute_many(conn, _INSERT_GROUP, [{"account_id": a, "slices": k, "reason": reason, "message": message, "at": at}
                                       for (a, k), (reason, message) in changed])


def set_reasons(session: Session, reasons: dict[int, tuple[str, str]]) -> dict:
    """Store why pending jobs wait: `reasons` holds only those that changed (the caller
    compares them with the rows it has), written in one executemany. Returns what was
    written, {job id: reason}."""
    if reasons:
        execute_many(session.connection(), _SET_REASON, [{"job_id": job_id, "new_reason": reason,
                                                          "new_message": message}
                                                         for job_id, (reason, message) in reasons.items()])
    return dict(reasons)


__all__ = [
    "Ended",
    "Lost",
    "Outcome",
    "StaleJob",
    "UsageMeter",
    "end_attempt",
    "finish",
    "requeue",
    "set_reasons",
    "ts",
]
