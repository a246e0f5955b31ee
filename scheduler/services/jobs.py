"""Job services: submit, list, show, cancel and history, for the API and the CLI.

Invariants:
- A submission (``submit_array``, or ``plan_array`` then ``write_arrays`` in a group
  commit; one job is an array of one) checks everything before it writes: the
  request's own fields (each number within its ``quota.limits`` range: slices, count,
  seconds, steps, batch_size, image_size, time_limit_s), that the shape fits some node,
  that the account exists, is visible to the caller and is a leaf, that the time limit
  asked for is within the account's effective maximum, and the pending limit of the
  account and of every ancestor. A refusal
  raises ``InvalidJob`` (the request itself is wrong: HTTP 422), ``NotFound``
  (unknown or invisible account or job: 404) or ``DomainError`` (refused in the
  current state, e.g. over the pending limit: 409); nothing has been written.
- ``accounts`` is the set of account names the caller may see (None: all, the
  admin). A job or account outside it is reported exactly as a missing one.
- Status changes go through ``scheduler.store.transition`` only. Cancelling a
  RUNNING job only marks it CANCELLED; the executor notices and stops its task.
- Pending limits are ``services.pending``'s (the rule, its locks and its message):
  every submission is checked there, and every job written or planned is counted
  there, so several submissions in one transaction (``services.committer``) see each
  other's jobs, planned (``plan_array``) or written. A batch locks and counts all its
  accounts at once beforehand (``load_pending_limits``).
- Every job gets its wall-time limit at submit (``inherited.job_time_limit``): the one
  asked for, else the account's effective default, else its effective maximum, else
  none; a job array's jobs get the same one each.
- What a caller sees of a job is ``job_to_public`` (PUBLIC_KEYS): its latest
  ``progress`` (``updated_at`` in ISO 8601), a pending job's ``position`` and
  ``estimated_start`` from ``services.estimates`` (None without an estimate), and as
  ``reason`` of a FAILED, CANCELLED or TIMEOUT job the stored reason or else the first
  line of its message (``display_reason``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Session, select

from quota import limits
from scheduler.services import control, inherited, pending, uploads, validate
from scheduler.services.directory import capacity, directory
from scheduler.services.errors import DomainError, Forbidden, Invalid, NotFound
from scheduler.services.estimates import start_time
from scheduler.store import (
    Job,
    JobEvent,
    JobState,
    Node,
    WaitReason,
    transition,
)
from scheduler.store.transitions import submit_job_arrays, submit_jobs
from scheduler.text import first_line
from scheduler.vocab import FRAMEWORKS, HOLD, KINDS, MODELS, MODES, SCRIPT, spec_keys

COMMAND_MAX_ARGS = 256
COMMAND_MAX_CHARS = 4096
PUBLIC_KEYS = ("id", "account", "model", "framework", "mode", "slices", "state", "reason", "reason_message",
               "submitted_at", "started_at", "finished_at", "node", "gpu", "attempts", "preemptions", "result",
               "error", "time_limit_s", "progress", "position", "estimated_start", "array_id")
PROGRESS_KEYS = ("step", "steps", "samples_per_second", "eta_s", "updated_at")
REASON_MAX_CHARS = 80  # a finished job's reason taken from its message: its first line, cut here


class InvalidJob(Invalid):
    """The request itself is malformed or can never run (unknown model, impossible shape...)."""


def check_request(model: str, framework: str | None, mode: str, slices: int, spec: dict) -> dict:
    """Validate what needs no database; return the spec to store. Raises InvalidJob, or
    LimitError for a number outside its ``quota.limits`` range (both HTTP 422)."""
    validate.number(limits.JOB_SLICES, slices)
    if mode not in MODES:
        raise InvalidJob(f"mode must be {' or '.join(MODES)} (got {mode!r})")
    spec = dict(spec or {})
    if model == HOLD:
        if framework is not None:
            raise InvalidJob("a hold job takes no framework")
        _only(spec, spec_keys(HOLD), model)
        if spec.get("seconds") is None:
            raise InvalidJob("a hold job needs seconds (how long to hold its slices)")
        validate.number(validate.JOB_NUMBERS["seconds"], spec["seconds"])
        return spec
    if model == SCRIPT:
        return _check_script(framework, spec)
    if model not in MODELS:
        raise InvalidJob(f"unknown model {model!r} (known: {', '.join(KINDS[:-1])} or {KINDS[-1]})")
    if framework not in FRAMEWORKS:
        raise InvalidJob(f"model {model} needs a framework: {' or '.join(FRAMEWORKS)} (got {framework!r})")
    _only(spec, spec_keys(model), model)
    for key in spec_keys(model):
        validate.optional(validate.JOB_NUMBERS[key], spec.get(key))
    if spec.get("image_size") is not None:
        _check_image_size(model, spec["image_size"])
    return spec


def _check_script(framework: str | None, spec: dict) -> dict:
    if framework is not None and framework not in FRAMEWORKS:
        raise InvalidJob(f"framework must be {' or '.join(FRAMEWORKS)} or none (got {framework!r})")
    _only(spec, spec_keys(SCRIPT), SCRIPT)
    command = spec.get("command")
    if (not isinstance(command, list) or not 1 <= len(command) <= COMMAND_MAX_ARGS
            or not all(isinstance(a, str) for a in command) or not command[0]):
        raise InvalidJob(f"command must be a list of 1 to {COMMAND_MAX_ARGS} strings, the first not empty")
    if any(len(a) > COMMAND_MAX_CHARS or "\0" in a for a in command):
        raise InvalidJob(f"command arguments must be at most {COMMAND_MAX_CHARS} characters, without NUL")
    if not isinstance(spec.get("upload"), str):
        raise InvalidJob("a script job needs upload (the id POST /v1/uploads gave its working directory)")
    return {"command": list(command), "upload": spec["upload"]}


def _only(spec: dict, allowed: Iterable[str], model: str) -> None:
    extra = sorted(set(spec) - set(allowed))
    if extra:
        raise InvalidJob(f"{model} jobs take no {', '.join(extra)} (they take: {', '.join(allowed)})")


def _check_image_size(model: str, size: int) -> None:
    try:
        from workloads.registry import check_image_size
    except ImportError:
        return
    try:
        check_image_size(model, size)
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None


def _check_submission(
    session: Session, *, account: str, model: str, framework: str | None, mode: str, slices: int,
    spec: dict, accounts: frozenset[str] | set[str] | None, count: int, time_limit_s: float | None = None,
    root: str | None = None,
):
    """Everything ``submit_array`` and ``plan_array`` check before writing; returns (entry,
    spec, time limit): the limit is resolved against the account (``inherited.job_time_limit``).
    A script job also needs an account allowed scripts and its upload (``root``: the server's
    results directory)."""
    spec = check_request(model, framework, mode, slices, spec)
    validate.optional(limits.TIME_LIMIT, time_limit_s, "time_limit_s")
    validate.lookup_name(account)
    why = capacity(session).shape_error(slices)
    if why is not None:
        raise InvalidJob(f"cannot place {slices} slices: {why}")
    tree = directory(session)
    if accounts is not None and account not in accounts:
        raise NotFound(f"unknown account {account}")
    entry = tree.get(account)
    if not tree.is_leaf(entry):
        raise InvalidJob(f"account {account} has sub-accounts; jobs run on leaf accounts (submit to one of those)")
    settings = inherited.resolve(tree.ancestors(entry))
    limit = inherited.job_time_limit(settings, time_limit_s, account)
    if model == SCRIPT:
        if not settings.allow_scripts:
            raise Forbidden(f"account {account} may not run scripts (an admin allows them: "
                            f"fairgpu admin account set {account} --allow-scripts)")
        if count != 1:
            raise InvalidJob("a script job is submitted one at a time (no count)")
        uploads.check(root, entry.id, spec["upload"])
    pending.check(session, tree, entry, count)
    return entry, spec, limit


def submit_array(
    session: Session, *, count: int, account: str, model: str, framework: str | None, mode: str, slices: int,
    spec: dict, at: datetime, accounts: frozenset[str] | set[str] | None = None, time_limit_s: float | None = None,
    root: str | None = None, after: Iterable[int] | None = None,
) -> list[int]:
    """A job array: ``count`` identical jobs, all or none. Everything is checked once,
    before anything is written (the pending limits count all ``count`` jobs); then the
    jobs are inserted together, each with the same time limit. Returns their ids,
    ascending (their queue order)."""
    validate.number(limits.JOB_COUNT, count)
    entry, spec, limit = _check_submission(session, account=account, model=model, framework=framework, mode=mode,
                                           slices=slices, spec=spec, accounts=accounts, count=count,
                                           time_limit_s=time_limit_s, root=root)
    after = control.check_after(session, after, accounts)
    ids = submit_jobs(session, count=count, account_id=entry.id, model=model, framework=framework, mode=mode,
                      slices=slices, spec=spec, at=at, time_limit_s=limit)
    control.link(session, [(ids, after)])
    pending.add(session, entry.id, count)
    if model == SCRIPT:  # the row exists: its working directory moves into the job's directory
        uploads.claim(root, entry.id, spec["upload"], ids[0])
    return ids


@dataclass(frozen=True)
class ArrayPlan:
    """A job array checked in this transaction and not yet written (``write_arrays``)."""
    count: int
    row: dict  # submit_jobs' keyword arguments but count
    after: tuple[int, ...] = ()  # the jobs each starts after (services.gates)


def plan_array(
    session: Session, *, count: int, account: str, model: str, framework: str | None, mode: str, slices: int,
    spec: dict, at: datetime, accounts: frozenset[str] | set[str] | None = None, time_limit_s: float | None = None,
    after: Iterable[int] | None = None,
) -> ArrayPlan:
    """``submit_array``'s checks without its insert, for a group commit: the pending
    counts of this transaction already include the planned jobs, so later submissions in
    the batch are checked against them; ``write_arrays`` must write the plan in the same
    transaction. Script jobs are not planned (their upload is claimed after the insert)."""
    validate.number(limits.JOB_COUNT, count)
    if model == SCRIPT:
        raise InvalidJob("a script job is written at once (submit_array), not planned")
    entry, spec, limit = _check_submission(session, account=account, model=model, framework=framework, mode=mode,
                                           slices=slices, spec=spec, accounts=accounts, count=count,
                                           time_limit_s=time_limit_s)
    after = control.check_after(session, after, accounts)
    pending.add(session, entry.id, count)
    return ArrayPlan(count, {"account_id": entry.id, "model": model, "framework": framework, "mode": mode,
                             "slices": slices, "spec": spec, "at": at, "time_limit_s": limit}, after)


def write_arrays(session: Session, plans: list[ArrayPlan]) -> list[list[int]]:
    """Write planned arrays: every job in one INSERT, every event in another; each
    plan's ids, ascending, in the order given (an array's id and dependencies: control.link)."""
    out = submit_job_arrays(session, [(p.count, p.row) for p in plans])
    control.link(session, [(ids, p.after) for ids, p in zip(out, plans)])
    return out


def load_pending_limits(session: Session, accounts: Iterable[str]) -> None:
    """Lock and count the pending limits above every named account at once (``pending.load``:
    one statement each), before a batch's submissions are checked one by one. Names that
    are unknown are left to the submission's own check to refuse."""
    tree = directory(session)
    pending.load(session, tree, [tree.by_name[a] for a in accounts if a in tree.by_name])


def uploading_account(session: Session, account: str | None, accounts):
    """The leaf account an upload is stored under (the caller's own, or the one named)."""
    if account is None:
        raise InvalidJob("an admin token must name the account to upload for (?account=)")
    validate.lookup_name(account)
    tree = directory(session)
    if accounts is not None and account not in accounts:
        raise NotFound(f"unknown account {account}")
    return tree.get(account)


def framework_warnings(session: Session, framework: str | None) -> list[str]:
    """A warning when no active node can run `framework` now (the job would wait
    Infeasible until one can); nothing when some node can, or nobody knows."""
    if framework is None:
        return []
    rows = session.exec(select(Node.frameworks).where(Node.active == sa.true())).all()
    if not rows or any(r is None for r in rows):
        return []
    have = sorted({f for r in rows for f in r.split(",") if f})
    if framework in have:
        return []
    return [(f"no node can run {framework} now (the nodes have: {', '.join(have) or 'no framework'}); "
            "the job waits, Infeasible, until one can")]


def list_jobs(
    session: Session, *, accounts: frozenset[str] | set[str] | None, include_finished: bool = False,
    account: str | None = None, states: tuple[JobState, ...] | None = None, since: datetime | None = None,
) -> list[Job]:
    """Jobs visible to the caller, oldest first; ``account`` narrows to that account's subtree;
    ``states`` and ``since`` as ``control.filter_statement`` (either takes finished jobs in)."""
    tree = directory(session)
    stmt = select(Job)
    if account is not None:
        validate.lookup_name(account)
        if accounts is not None and account not in accounts:
            raise NotFound(f"unknown account {account}")
        stmt = stmt.where(Job.account_id.in_(tree.subtree_ids(tree.get(account))))
    elif accounts is not None:
        stmt = stmt.where(Job.account_id.in_([tree.by_name[a].id for a in accounts if a in tree.by_name]))
    if not include_finished and not states and since is None:
        stmt = stmt.where(Job.state.in_([JobState.PENDING, JobState.RUNNING]))
    stmt = control.filter_statement(stmt, states=states, since=since)
    return list(session.exec(stmt.order_by(Job.id)).all())


def get_job(session: Session, job_id: int, accounts: frozenset[str] | set[str] | None) -> Job:
    """The job, or NotFound if it is missing or not the caller's (the same error either way)."""
    validate.number(limits.ID, job_id, "job_id")
    job = session.get(Job, job_id)
    if job is None or (accounts is not None and directory(session).name_of(job.account_id) not in accounts):
        raise NotFound(f"no job {job_id}")
    return job


def cancel(session: Session, job_id: int, accounts: frozenset[str] | set[str] | None, at: datetime) -> Job:
    job = get_job(session, job_id, accounts)
    state = JobState(job.state)
    if state.is_finished():
        raise DomainError(f"job {job_id} already finished ({state.value}); nothing to cancel")
    return transition(session, job, JobState.CANCELLED, at=at, message="cancelled by the user")


def job_events(session: Session, job_id: int, after: int | None = None) -> list[JobEvent]:
    """The job's events in time order; with ``after`` (an event id), only the later-written
    ones: events are only appended, so a follower asks for those after the last it saw."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        stmt = stmt.where(JobEvent.id > validate.number(limits.ID, after, "after_event"))
    return list(session.exec(stmt.order_by(JobEvent.at, JobEvent.id)).all())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def display_reason(state: JobState, reason: str | None, message: str | None, error: str | None) -> str | None:
    """The job's reason: the stored one (a pending reason, TimeLimit...); for a FAILED,
    CANCELLED or TIMEOUT job without one, the first line of its message or error, cut to
    REASON_MAX_CHARS (the whole text stays in ``reason_message`` and ``error``)."""
    if reason or state not in (JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT):
        return reason
    text = first_line(message or error or "")
    if not text:
        return None
    return text if len(text) <= REASON_MAX_CHARS else text[:REASON_MAX_CHARS - 3] + "..."


def public_progress(progress: dict | None) -> dict | None:
    """The job's latest progress as PROGRESS_KEYS (``updated_at`` ISO 8601), or None."""
    if not isinstance(progress, dict):
        return None
    out = {k: progress.get(k) for k in PROGRESS_KEYS}
    updated = out["updated_at"]
    out["updated_at"] = (datetime.fromtimestamp(updated, UTC).isoformat()
                         if isinstance(updated, (int, float)) and not isinstance(updated, bool) else None)
    return out


def job_to_public(job: Job, account_name: str, estimate=None, group_reason: tuple[str, str] | None = None,
                  gate: tuple[str, str] | None = None) -> dict:
    """The job as PUBLIC_KEYS. ``estimate`` (a ``quota.estimate.Estimate``, for a pending
    job) gives ``position`` and ``estimated_start``; both are None without one.
    ``group_reason``: (reason, message) of the job's (account, size) group (``wait_reasons``),
    shown for a pending job that has no reason of its own; ``gate``: (reason, message) of a
    pending job's hold or dependencies (``services.gates``), shown before either."""
    state = JobState(job.state)
    reason, message = job.reason, job.reason_message
    if state == JobState.PENDING and gate is not None:
        reason, message = gate
    elif state == JobState.PENDING and reason is None and group_reason is not None:
        reason, message = group_reason
    return {
        "id": job.id, "account": account_name, "model": job.model, "framework": job.framework, "mode": job.mode,
        "slices": job.slices, "state": state.value,
        "reason": display_reason(state, reason, message, job.error),
        "reason_message": message, "submitted_at": _iso(job.submitted_at),
        "started_at": _iso(job.started_at), "finished_at": _iso(job.finished_at), "node": job.node, "gpu": job.gpu,
        "attempts": job.attempts, "preemptions": job.preemptions, "result": job.result, "error": job.error,
        "time_limit_s": job.time_limit_s, "progress": public_progress(job.progress),
        "position": estimate.position if estimate is not None and state == JobState.PENDING else None,
        "estimated_start": _iso(start_time(estimate)) if state == JobState.PENDING else None,
        "array_id": job.array_id,
    }


def wait_reasons(session: Session, rows: Iterable[Job]) -> dict[tuple[int, int], tuple[str, str]]:
    """{(account id, slices): (reason, message)}: the stored group reasons (the loop's, in
    the wait_reason table) of the pending jobs in `rows` that have no reason of their own."""
    keys = {(j.account_id, j.slices) for j in rows if j.state == JobState.PENDING and j.reason is None}
    if not keys:
        return {}
    stmt = select(WaitReason).where(WaitReason.account_id.in_({a for a, _k in keys}))
    return {(w.account_id, w.slices): (w.reason, w.message) for w in session.exec(stmt).all()
            if (w.account_id, w.slices) in keys}


def gate_reasons(session: Session, rows: Iterable[Job]) -> dict[int, tuple[str, str]]:
    """{job id: (reason, message)} of the pending jobs in `rows` that a hold or their
    dependencies keep waiting (``services.gates``)."""
    from scheduler.services import gates

    ids = [j.id for j in rows if j.state == JobState.PENDING]
    return gates.reasons(session.connection(), ids) if ids else {}


def public(session: Session, job: Job, estimates: dict | None = None, waits: dict | None = None,
           gated: dict | None = None) -> dict:
    """``job_to_public`` with the account name looked up in this transaction's tree;
    ``estimates``: {job id: Estimate} (``services.estimates``) for pending jobs; ``waits``:
    ``wait_reasons`` and ``gated``: ``gate_reasons`` of a list the job is in (read here when
    not given)."""
    if waits is None:
        waits = wait_reasons(session, [job])
    if gated is None:
        gated = gate_reasons(session, [job])
    return job_to_public(job, directory(session).name_of(job.account_id), (estimates or {}).get(job.id),
                         waits.get((job.account_id, job.slices)), gated.get(job.id))
