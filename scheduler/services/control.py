"""Slurm's job-control verbs over the store: cancel many (scancel), hold and release,
requeue, update (scontrol), the listing's filters (squeue -t / sacct -S) and the
capacity view (sinfo).

Invariants:
- Each verb checks everything before it writes: a job the caller may not see is
  reported as a missing one (NotFound, 404), a bad value is Invalid (422), a job whose
  state does not allow the verb is DomainError (409); then nothing has been written.
- Status changes go through store.transitions (guarded by version, one JobEvent each);
  a hold, a release or an update changes no state but appends its own event ("held",
  "released", "updated") in the same transaction, so the loop's change cursor re-reads
  the job (services.snapshot), and the API wakes the loop after commit.
- Gates (holds, dependencies) are services.gates' rows and rule; this module writes them.
- The clock is an argument (`at`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from quota import limits
from quota.limits import Range
from scheduler.services import inherited, pending, validate
from scheduler.services.directory import capacity, directory
from scheduler.services.errors import DomainError, Invalid, NotFound
from scheduler.services.gates import MAX_AFTER
from scheduler.store import Account, Job, JobGate, JobState, Node, transition
from scheduler.store.transitions import update_job

SINCE = Range("since", 0, 3650 * limits.DAY_S, "s")  # --since 2h: that long before now
MAX_IDS = 1000  # jobs named in one request (a job array's size)
ACTIVE = (JobState.PENDING, JobState.RUNNING)
REQUEUABLE = (JobState.RUNNING, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)
CANCELLED_BY_USER = "cancelled by the user"
REQUEUED_BY_USER = "requeued by the user (fairgpu requeue)"


# -- the listing's filters -----------------------------------------------------------------
def parse_states(values: Iterable[str] | None) -> tuple[JobState, ...] | None:
    """`PENDING,RUNNING` (or repeated) -> states; case-insensitive; unknown -> Invalid."""
    if not values:
        return None
    out: list[JobState] = []
    for value in values:
        for part in str(value).split(","):
            name = part.strip().upper()
            if name not in JobState.__members__:
                raise Invalid(f"state must be one of {', '.join(s.value for s in JobState)} (got {part.strip()!r})")
            if JobState[name] not in out:
                out.append(JobState[name])
    return tuple(out)


def parse_since(text: str | None, now: datetime) -> datetime | None:
    """An ISO 8601 time or date (UTC without a zone), or a duration before now (`2h`, `3d`)."""
    if text is None:
        return None
    if isinstance(text, str) and text[:1].isdigit() and "-" not in text and ":" not in text:
        return now - timedelta(seconds=validate.parse_duration(text, SINCE))
    return validate.parse_when(text, "since")


def filter_statement(stmt, *, states: tuple[JobState, ...] | None, since: datetime | None):
    """Narrow a job query: to `states`; to jobs not finished before `since` (sacct -S: every
    job that was pending or running at or after it)."""
    if states:
        stmt = stmt.where(Job.state.in_(states))
    if since is not None:
        stmt = stmt.where(sa.or_(Job.finished_at.is_(None), Job.finished_at >= since))
    return stmt


# -- which jobs a verb acts on ---------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What a bulk verb names: ids, and/or a job array, narrowed by states and an account subtree."""

    ids: tuple[int, ...] = ()
    array: int | None = None
    states: tuple[JobState, ...] | None = None
    account: str | None = None

    @property
    def by_filter(self) -> bool:
        return not self.ids


def _ids(ids: Iterable[int]) -> tuple[int, ...]:
    ids = tuple(dict.fromkeys(ids))
    if len(ids) > MAX_IDS:
        raise Invalid(f"at most {MAX_IDS} job ids in one request (got {len(ids)})")
    for i in ids:
        validate.number(limits.ID, i, "job id")
    return ids


def select_jobs(session: Session, sel: Selection, accounts) -> list[Job]:
    """The jobs `sel` names that the caller may see, by id, each read FOR UPDATE (PostgreSQL).
    Named ids must all exist and be visible (else NotFound for the first that is not);
    an array must have a visible job. With no ids and no array, the filters must name
    at least a state or an account."""
    ids = _ids(sel.ids)
    if sel.array is not None:
        validate.number(limits.ID, sel.array, "array")
    if not ids and sel.array is None and not sel.states and sel.account is None:
        raise Invalid("name the jobs: ids, an array, a state or an account")
    tree = directory(session)
    stmt = select(Job).with_for_update()
    if ids:
        stmt = stmt.where(Job.id.in_(ids))
    if sel.array is not None:
        stmt = stmt.where(sa.or_(Job.array_id == sel.array, Job.id == sel.array))
    if sel.account is not None:
        validate.lookup_name(sel.account)
        if accounts is not None and sel.account not in accounts:
            raise NotFound(f"unknown account {sel.account}")
        stmt = stmt.where(Job.account_id.in_(tree.subtree_ids(tree.get(sel.account))))
    elif accounts is not None:
        stmt = stmt.where(Job.account_id.in_([tree.by_name[a].id for a in accounts if a in tree.by_name]))
    found = {j.id: j for j in session.exec(stmt).all()}
    for i in ids:
        if i not in found:
            raise NotFound(f"no job {i}")
    if sel.array is not None and not found:
        raise NotFound(f"no job array {sel.array}")
    jobs = [found[i] for i in sorted(found)]
    if sel.states:
        jobs = [j for j in jobs if JobState(j.state) in sel.states]
    return jobs


# -- scancel ---------------------------------------------------------------------------------
def cancel_many(session: Session, sel: Selection, accounts, at: datetime) -> list[Job]:
    """Cancel what `sel` names. Jobs named by id must all be active (else 409, nothing
    cancelled); by array or filter, the active ones among them are cancelled. Returns
    the jobs cancelled (possibly none)."""
    if sel.states and any(s not in ACTIVE for s in sel.states):
        raise Invalid("cancel --state takes PENDING or RUNNING (finished jobs have nothing to cancel)")
    jobs = select_jobs(session, sel, accounts)
    if sel.ids:
        done = [j for j in jobs if JobState(j.state).is_finished()]
        if done:
            j = done[0]
            raise DomainError(f"job {j.id} already finished ({JobState(j.state).value}); nothing cancelled")
    out = []
    for job in jobs:
        if JobState(job.state).is_active():
            out.append(transition(session, job, JobState.CANCELLED, at=at, message=CANCELLED_BY_USER))
    return out


# -- hold / release ----------------------------------------------------------------------------
def _pending_only(jobs: list[Job], verb: str) -> None:
    for job in jobs:
        if JobState(job.state) != JobState.PENDING:
            raise DomainError(f"job {job.id} is {JobState(job.state).value}: only pending jobs can be {verb}")


def hold(session: Session, ids: Iterable[int], accounts, at: datetime) -> list[Job]:
    """Hold pending jobs: never admitted until released (JobHeldUser). Holding a held job
    changes nothing."""
    jobs = select_jobs(session, Selection(ids=_ids(ids) or _none()), accounts)
    _pending_only(jobs, "held")
    gates = _gates(session, [j.id for j in jobs])
    for job in jobs:
        gate = gates.get(job.id)
        if gate is not None and gate.held:
            continue
        if gate is None:
            session.add(JobGate(job_id=job.id, held=True))
        else:
            gate.held = True
        session.flush()
        _event(session, job.id, "held", "held by the user", at)
    return jobs


def release(session: Session, ids: Iterable[int], accounts, at: datetime) -> list[Job]:
    """Release held jobs (each must be pending and held: else 409, nothing released)."""
    jobs = select_jobs(session, Selection(ids=_ids(ids) or _none()), accounts)
    _pending_only(jobs, "released")
    gates = _gates(session, [j.id for j in jobs])
    for job in jobs:
        if job.id not in gates or not gates[job.id].held:
            raise DomainError(f"job {job.id} is not held")
    for job in jobs:
        gate = gates[job.id]
        if gate.after:
            gate.held = False
        else:
            session.delete(gate)
        session.flush()
        _event(session, job.id, "released", "released by the user", at)
    return jobs


def _none() -> tuple:
    raise Invalid("name at least one job id")


def _gates(session: Session, ids: list[int]) -> dict[int, JobGate]:
    if not ids:
        return {}
    return {g.job_id: g for g in session.exec(select(JobGate).where(JobGate.job_id.in_(ids))).all()}


def _event(session: Session, job_id: int, kind: str, message: str, at: datetime) -> None:
    from scheduler.store import add_event

    add_event(session, job_id, kind, message, at)


# -- requeue -----------------------------------------------------------------------------------
def requeue(session: Session, ids: Iterable[int], accounts, at: datetime) -> list[Job]:
    """Back to PENDING, as Slurm's scontrol requeue: a RUNNING job's attempt ends (the loop
    stops its task; no retry is spent) and it keeps its place in its account's queue; a
    FAILED, CANCELLED or TIMEOUT job waits again with a fresh set of retries (its history
    stays). A SUCCEEDED or PENDING job is refused (409), as is one whose account has
    gained sub-accounts since, or that would put its account over its pending limit."""
    jobs = select_jobs(session, Selection(ids=_ids(ids) or _none()), accounts)
    tree = directory(session)
    back: dict[int, int] = {}
    for job in jobs:
        state = JobState(job.state)
        if state not in REQUEUABLE:
            hint = "submit it again" if state == JobState.SUCCEEDED else "it is waiting already"
            raise DomainError(f"job {job.id} is {state.value}: only running or failed, cancelled or timed-out "
                              f"jobs can be requeued ({hint})")
        entry = tree.by_id.get(job.account_id)
        if entry is None or not tree.is_leaf(entry):
            raise DomainError(f"job {job.id}'s account {tree.name_of(job.account_id)} has sub-accounts now; "
                              "jobs run on leaf accounts only")
        back[job.account_id] = back.get(job.account_id, 0) + 1
    for account_id, n in back.items():
        pending.check(session, tree, tree.by_id[account_id], n)
    return [transition(session, job, JobState.PENDING, at=at, message=REQUEUED_BY_USER, event="requeued")
            for job in jobs]


# -- scontrol update ---------------------------------------------------------------------------
UNSET = object()


def update(session: Session, job_id: int, accounts, at: datetime, *, time_limit_s=UNSET, slices=UNSET) -> Job:
    """A pending job's time limit (within its account's maximum) and slices (a shape some
    node holds, within the caps of its account and every ancestor); a running job's time
    limit, only lowered (Slurm lets users lower it, never raise it). Refused values write
    nothing."""
    if time_limit_s is UNSET and slices is UNSET:
        raise Invalid("give a new time limit or slices")
    (job,) = select_jobs(session, Selection(ids=_ids([job_id])), accounts)
    state = JobState(job.state)
    tree = directory(session)
    entry = tree.by_id[job.account_id]
    fields, said = {}, []
    if state.is_finished():
        raise DomainError(f"job {job.id} already finished ({state.value}); nothing to update")
    if slices is not UNSET:
        validate.number(limits.JOB_SLICES, slices)
        if state != JobState.PENDING:
            raise DomainError(f"job {job.id} is {state.value}: only a pending job's slices can change "
                              "(requeue it first)")
        why = capacity(session).shape_error(slices)
        if why is not None:
            raise Invalid(f"cannot place {slices} slices: {why}")
        ids = [e.id for e in tree.ancestors(entry)]
        caps = session.connection().execute(
            sa.select(Account.name, Account.max_slices).where(Account.id.in_(ids))).all()
        for name, cap in caps:
            if cap is not None and slices > cap:
                raise Invalid(f"{slices} slices are over account {name}'s cap of {cap} slices")
        if slices != job.slices:
            fields["slices"] = slices
            said.append(f"slices {job.slices} -> {slices}")
    if time_limit_s is not UNSET:
        if time_limit_s is None:
            raise Invalid("time_limit_s must be a number of seconds")
        settings = inherited.resolve(tree.ancestors(entry))
        limit = inherited.job_time_limit(settings, time_limit_s, entry.name)
        if state == JobState.RUNNING and job.time_limit_s is not None and limit > job.time_limit_s:
            raise DomainError(f"job {job.id} is RUNNING: its time limit can only be lowered "
                              f"(now {validate.human_duration(job.time_limit_s)})")
        if limit != job.time_limit_s:
            fields["time_limit_s"] = limit
            old = "none" if job.time_limit_s is None else validate.human_duration(job.time_limit_s)
            said.append(f"time limit {old} -> {validate.human_duration(limit)}")
    if fields:
        update_job(session, job, at=at, message="updated by the user: " + ", ".join(said), **fields)
        session.refresh(job)
    return job


# -- sinfo -------------------------------------------------------------------------------------
def nodes(session: Session) -> list[dict]:
    """Every node with its slices total, used (by running jobs), free, GPU type and state:
    idle, mixed, allocated (Slurm's idle, mix, alloc) or inactive (with why: Slurm's down)."""
    used: dict[str, int] = {}
    for node, gpu_slices in session.exec(select(Job.node, Job.gpu_slices).where(Job.state == JobState.RUNNING)):
        used[node] = used.get(node, 0) + sum(n for _g, n in (gpu_slices or ()))
    out = []
    for n in session.exec(select(Node).order_by(Node.name)).all():
        total = n.gpus * n.slices_per_gpu
        busy = used.get(n.name, 0)
        if not n.active:
            state = "inactive"
        else:
            state = "idle" if busy == 0 else "allocated" if busy >= total else "mixed"
        out.append({"node": n.name, "gpu_type": n.gpu_type, "gpus": n.gpus, "slices_per_gpu": n.slices_per_gpu,
                    "slices_total": total, "slices_used": busy, "slices_free": max(0, total - busy) if n.active else 0,
                    "state": state, "reason": n.reason, "frameworks": n.frameworks})
    return out


# -- what a submission adds beside its jobs ------------------------------------------------------
def check_after(session: Session, after: Iterable[int] | None, accounts) -> tuple[int, ...]:
    """`submit --after ID[:ID]`: 1 to MAX_AFTER existing jobs the submitter may see (NotFound
    alike for the others). A job already ended otherwise than SUCCEEDED is taken: the new
    job waits DependencyNeverSatisfied, as Slurm's does."""
    if after is None:
        return ()
    ids = tuple(dict.fromkeys(after))
    if not 1 <= len(ids) <= MAX_AFTER:
        raise Invalid(f"after takes 1 to {MAX_AFTER} job ids (got {len(ids)})")
    for i in ids:
        validate.number(limits.ID, i, "after")
    select_jobs(session, Selection(ids=ids), accounts)
    return ids


def link(session: Session, arrays: list[tuple[list[int], tuple[int, ...]]]) -> None:
    """For jobs just inserted, as (ids, after) per submission: an array's first id on each of
    its jobs (count > 1), and a gate row per job that starts after others."""
    conn = session.connection()
    j = Job.__table__.c
    gates = []
    for ids, after in arrays:
        if len(ids) > 1:
            conn.execute(Job.__table__.update().where(j.id.in_(ids)).values(array_id=ids[0]))
        if after:
            gates.extend({"job_id": i, "held": False, "after": list(after)} for i in ids)
    if gates:
        conn.execute(JobGate.__table__.insert(), gates)
