"""Institution routes: submit, list, show, cancel and logs of jobs, and the share report.

Thin: each handler reads the principal and calls one service. What a caller may
see is ``principal.accounts`` (None for the admin), enforced by the services.
"""
from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from scheduler.api.deps import (
    BearerDep,
    PrincipalDep,
    SessionDep,
    after_commit,
    authorize,
    authorize_batch,
    now,
)
from scheduler.api.openapi import AUTH, BODY, AccountQuery, errors
from scheduler.api.outputs import JobLogs, JobPublic, ShareExplained
from scheduler.api.schemas import SubmitRequest
from scheduler.api.routes_control import SinceQuery, StateQuery
from scheduler.services import control, jobs, script_gate, uploads
from scheduler.services import logs as output
from scheduler.services.committer import Deferred
from scheduler.services.validate import ID, limits
from scheduler.store import JobState, session_scope

LOG_TAIL = limits.LOG_TAIL

router = APIRouter(tags=["jobs"])
# The range is checked by the service (one message naming it); the schema only declares it.
JobId = Annotated[int, Path(description=f"The job's id ({ID.describe()})",
                            json_schema_extra={"minimum": ID.low, "maximum": ID.high})]


@router.get("/whoami", tags=["auth"], summary="The caller's account and the accounts it may act for",
            responses=errors(*AUTH))
async def whoami(who: PrincipalDep) -> dict:
    return {"admin": who.is_admin, "account": who.account,
            "accounts": sorted(who.accounts) if who.accounts is not None else None}


@router.post("/jobs", status_code=201, summary="Submit a job (or, with count, a job array)",
             responses=errors(*AUTH, *BODY, 404, 409))
async def submit(body: SubmitRequest, request: Request, token: BearerDep) -> dict:
    """The checks and the insert run off the event loop: queued to the app's group
    committer (one transaction per batch)."""
    state = request.app.state
    at = now(request)
    work = functools.partial(_submit, token=token, body=body, at=at, root=state.results_dir,
                             sandbox=state.sandbox_status)
    # _submit refuses before it writes, except a script job (it claims its upload after the insert)
    return await state.committer.submit_async(work, savepoint=body.model == jobs.SCRIPT,
                                              prepare=(_prepare_batch, (token, at, body.account)))


def _prepare_batch(session, keys: list[tuple[str, datetime, str | None]]) -> None:
    """What a committer batch's submissions share, read before they run: every token in
    one query (``authorize_batch``), then the pending limits of every account they submit
    to, locked and counted at once (``jobs.load_pending_limits``). Each submission still
    makes every check itself; this only spares it the round trips."""
    authorize_batch(session, [(token, at) for token, at, _ in keys])
    accounts = []
    for token, at, account in keys:
        try:
            who = authorize(session, token, at)  # found by authorize_batch: no query
        except HTTPException:
            continue  # refused by its own piece
        name = account or who.account
        if name is not None and who.may_see(name):
            accounts.append(name)
    jobs.load_pending_limits(session, accounts)


async def _check_token_first(request: Request) -> HTTPException | None:
    """For a submission whose body is invalid: the 401 or 403 its token earns, if any, so
    that a bad token is answered before a bad body (in the thread pool: off the loop)."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None  # the bearer dependency answers a missing token before the body is read
    try:
        await run_in_threadpool(_alone, request.app.state.engine, lambda s: authorize(s, token, now(request)))
    except HTTPException as exc:
        return exc
    return None


submit.check_token_first = _check_token_first


def _submit(session, *, token: str, body: SubmitRequest, at, root, sandbox=None) -> Deferred | dict:
    """One submission inside a transaction (the committer's batch, or its own). Every
    refusal is raised before anything is written (the token's last use may be stamped
    already); the jobs are written by the batch's flush (``jobs.write_arrays``), a
    script job at once (it claims its upload after the insert), unless no sandbox can
    start for it (``script_gate``: 409)."""
    who = authorize(session, token, at)
    if body.model == jobs.SCRIPT:
        script_gate.check_scripts(sandbox)
    account = body.account or who.account
    if account is None:
        raise jobs.InvalidJob("an admin token must name the account to submit to")
    # one job is an array of one: the same checks and insert (Core INSERTs) as any array
    args = {"count": 1 if body.count is None else body.count, "account": account, "model": body.model,
            "framework": body.framework, "mode": body.mode, "slices": body.slices, "spec": body.spec(), "at": at,
            "accounts": who.accounts, "time_limit_s": body.time_limit_s, "after": body.after}
    warnings = jobs.framework_warnings(session, body.framework)

    def answer(ids: list[int]) -> dict:
        return {**({"ids": ids} if body.count is not None else {"id": ids[0]}),
                **({"warnings": warnings} if warnings else {})}

    if body.model == jobs.SCRIPT:
        return answer(jobs.submit_array(session, root=root, **args))
    return Deferred(jobs.plan_array(session, **args), answer)


def _alone(engine, work):
    """`work(session)` in a short transaction of its own (run in the thread pool)."""
    with session_scope(engine) as session:
        return work(session)


@router.post("/uploads", status_code=201, summary="Upload a working directory (tar.gz) for a script job",
             responses=errors(*AUTH, 400, 404, 409, 413, 422),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def upload(request: Request, token: BearerDep, account: AccountQuery = None) -> dict:
    """The body is the directory as a gzip'd tar (`fairgpu submit script --working-dir` packs it);
    the answer's `upload` goes into the script job's submission.

    No database session is open while the body is read: the token, the account and its
    right to run scripts are checked first, in a short transaction of their own in the
    thread pool (401, 403 or 404, and 409 where no sandbox can start, before a byte of the
    body is read). The body's pieces are then received as they come and checked and
    written in the thread pool (``uploads.Receiver``), so a refusal comes at the first bad
    header."""
    state = request.app.state
    check = functools.partial(_may_upload, token=token, at=now(request), account=account, root=state.results_dir,
                              sandbox=state.sandbox_status)
    account_id = await run_in_threadpool(_alone, state.engine, check)
    receiver = await run_in_threadpool(uploads.Receiver, state.results_dir, account_id)
    try:
        pieces: list[bytes] = []
        held = 0
        async for chunk in request.stream():
            pieces.append(chunk)
            held += len(chunk)
            if held >= UPLOAD_PIECE:
                await run_in_threadpool(receiver.feed, b"".join(pieces))
                pieces, held = [], 0
        if pieces:
            await run_in_threadpool(receiver.feed, b"".join(pieces))
        return await run_in_threadpool(receiver.finish)
    except ClientDisconnect:
        raise HTTPException(400, "the upload ended before its body did") from None
    finally:
        receiver.discard()  # a close and an unlink; run_in_threadpool is not cancelled, so no thread holds it


UPLOAD_PIECE = 256 << 10  # what the route gathers from the body before one hop to the thread pool


def _may_upload(session, *, token: str, at: datetime, account: str | None, root: str | None, sandbox=None) -> int:
    who = authorize(session, token, at)
    script_gate.check_scripts(sandbox)  # 409 before the body: no script could run on what it brings
    return uploads.may_upload(session, root, account or who.account, who.accounts)


@router.get("/uploads/allowed", summary="Would an upload for this account be taken? (no body, nothing written)",
            responses=errors(*AUTH, 404, 409, 422))
async def upload_allowed(request: Request, token: BearerDep, account: AccountQuery = None) -> dict:
    """The checks ``POST /uploads`` makes before it reads a byte (token, account, its right
    to run scripts, a sandbox that can start), alone: `fairgpu submit script` asks first,
    so a refused account costs no packing and no upload."""
    state = request.app.state
    check = functools.partial(_may_upload, token=token, at=now(request), account=account, root=state.results_dir,
                              sandbox=state.sandbox_status)
    await run_in_threadpool(_alone, state.engine, check)
    return {"allowed": True}


def _estimates(request: Request, session, who, rows) -> dict:
    """Pending jobs' positions and estimated starts, from the app's cached replay of the queue."""
    pending = [j.id for j in rows if j.state == JobState.PENDING]
    if not pending:
        return {}
    return request.app.state.estimates.get(session, now(request), who.accounts, wanted=pending)


@router.get("/jobs", summary="List jobs (active ones unless all=true)", responses=errors(*AUTH, 404, 422),
            response_model=list[JobPublic])
async def list_jobs(
    request: Request, session: SessionDep, who: PrincipalDep,
    include_finished: Annotated[bool, Query(alias="all")] = False,
    account: AccountQuery = None, state: StateQuery = None, since: SinceQuery = None,
) -> list[dict]:
    rows = jobs.list_jobs(session, accounts=who.accounts, include_finished=include_finished, account=account,
                          states=control.parse_states(state), since=control.parse_since(since, now(request)))
    estimates, waits = _estimates(request, session, who, rows), jobs.wait_reasons(session, rows)
    gated = jobs.gate_reasons(session, rows)
    return [jobs.public(session, j, estimates, waits, gated) for j in rows]


@router.get("/jobs/{job_id}", summary="Everything known about a job", responses=errors(*AUTH, 404, 422),
            response_model=JobPublic)
async def show(job_id: JobId, request: Request, session: SessionDep, who: PrincipalDep) -> dict:
    job = jobs.get_job(session, job_id, who.accounts)
    return jobs.public(session, job, _estimates(request, session, who, [job]))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a pending or running job",
             responses=errors(*AUTH, 404, 409, 422), response_model=JobPublic)
async def cancel(job_id: JobId, request: Request, session: SessionDep, who: PrincipalDep) -> dict:
    job = jobs.cancel(session, job_id, who.accounts, now(request))
    after_commit(session, request.app.state.on_change)
    return jobs.public(session, job)


@router.get("/jobs/{job_id}/logs", summary="A job's event history and its task's own output, per attempt",
            responses=errors(*AUTH, 404, 422), response_model=JobLogs)
async def logs(
    job_id: JobId, request: Request, session: SessionDep, who: PrincipalDep,
    tail: Annotated[int | None, Query(description=f"Only the last N lines of output ({LOG_TAIL.describe()})",
                                      json_schema_extra={"minimum": LOG_TAIL.low, "maximum": LOG_TAIL.high})] = None,
    since: Annotated[str | None, Query(description="Output after this cursor (<attempt>:<byte offset>, the "
                                                   "cursor of an earlier answer)", max_length=21,
                                       json_schema_extra={"pattern": output.CURSOR_PATTERN})] = None,
    after_event: Annotated[int | None, Query(description="Only events with a larger id (the last one seen)",
                                             json_schema_extra={"minimum": ID.low, "maximum": ID.high})] = None,
) -> dict:
    return output.job_logs(session, job_id, who.accounts, request.app.state.results_dir, since=since, tail=tail,
                           after_event=after_event)


@router.get("/share", tags=["share"], summary="Fair shares (an institution sees its own subtree)",
            responses=errors(*AUTH, 404, 409, 422))
async def share(
    request: Request, session: SessionDep, who: PrincipalDep,
    account: AccountQuery = None,
) -> list[dict]:
    from scheduler.services.share import share_rows

    return share_rows(session, now(request), under=_share_root(who, account))


def _share_root(who, account: str | None) -> str | None:
    """The subtree a share report covers: the one asked for, else the caller's own (all, for the admin)."""
    from scheduler.services.errors import NotFound

    under = account if account is not None else who.account
    if under is not None and not who.may_see(under):
        raise NotFound(f"unknown account {under}")
    return under


@router.get("/share/explain", tags=["share"], summary="Why each of your accounts stands where it does, in words",
            responses=errors(*AUTH, 404, 409, 422), response_model=list[ShareExplained])
async def share_explain(
    request: Request, session: SessionDep, who: PrincipalDep,
    account: AccountQuery = None,
) -> list[dict]:
    from scheduler.services.share import explain_rows

    return explain_rows(session, now(request), under=_share_root(who, account))
