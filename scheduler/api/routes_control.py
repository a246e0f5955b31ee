"""Slurm's job-control verbs: cancel many (scancel), hold, release, requeue, update
(scontrol), and the capacity view (sinfo); the job listing's filters are declared here.

Thin: each handler reads the principal and calls one `services.control` function. What a
caller may act on is `principal.accounts` (None for the admin), enforced by the services:
a job another institution owns is answered as a missing one (404). A change wakes the
loop after its commit (`on_change`).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field

from scheduler.api.deps import PrincipalDep, SessionDep, after_commit, now
from scheduler.api.openapi import AUTH, BODY, errors
from scheduler.api.outputs import JobPublic
from scheduler.api.schemas import Body, Name, ranged
from scheduler.services import control, jobs
from scheduler.services.validate import limits
from scheduler.store import JobState

router = APIRouter(tags=["jobs"])

_STATES = ", ".join(s.value for s in JobState)
StateQuery = Annotated[list[str] | None, Query(
    description=f"Only jobs in these states ({_STATES}; comma-separated or repeated, as squeue -t); "
                "finished ones are listed without all=true", max_length=len(JobState))]
SinceQuery = Annotated[str | None, Query(
    description="Only jobs not finished before this time (as sacct -S): an ISO 8601 time or date (UTC "
                "without a zone), or a duration before now (90m, 2h, 7d); finished ones are listed without all=true",
    min_length=1, max_length=40)]
JobId = Annotated[int, Path(description=f"The job's id ({limits.ID.describe()})",
                            json_schema_extra={"minimum": limits.ID.low, "maximum": limits.ID.high})]
Ids = Field(default=None, max_length=control.MAX_IDS, description="Job ids")


class JobIds(Body):
    ids: list[int] = Field(min_length=1, max_length=control.MAX_IDS, description="Job ids")


class CancelRequest(Body):
    """Which jobs to cancel: ids (each must be pending or running), a job array, or every
    job in the given states and account subtree. At least one of them."""

    ids: list[int] | None = Ids
    array: int | None = Field(default=None, description="A job array's id (its first job's id)")
    state: list[str] | None = Field(default=None, max_length=2, description="PENDING and/or RUNNING")
    account: str | None = Field(default=None, min_length=1, max_length=limits.NAME_MAX_LEN,
                                description="Only this account's subtree")


class UpdateRequest(Body):
    """The fields sent change (scontrol update): a pending job's time limit and slices; a
    running job's time limit, lowered only."""

    time_limit_s: float | None = ranged(limits.TIME_LIMIT, "new wall-time limit of each attempt, in seconds",
                                        default=None)
    slices: int | None = ranged(limits.JOB_SLICES, "new GPU slices (a pending job)", default=None, strict=True)


class Changed(Body):
    ids: list[int] = Field(description="The jobs changed, ascending")


class NodeCapacity(Body):
    node: str = Name
    gpu_type: str
    gpus: int
    slices_per_gpu: int
    slices_total: int
    slices_used: int = Field(description="Held by running jobs")
    slices_free: int = Field(description="0 on an inactive node")
    state: str = Field(description="idle, mixed, allocated (Slurm's idle, mix, alloc) or inactive (down)")
    reason: str | None = Field(description="Why an inactive node is not used")
    frameworks: str | None = Field(description="Frameworks its workers can import (comma-separated); null: unknown")


def _changed(request: Request, session, done) -> dict:
    if done:
        after_commit(session, request.app.state.on_change)
    return {"ids": sorted(j.id for j in done)}


@router.post("/control/cancel", summary="Cancel jobs by id, array, state or account (scancel)",
             responses=errors(*AUTH, *BODY, 404, 409), response_model=Changed)
async def cancel_many(body: CancelRequest, request: Request, session: SessionDep, who: PrincipalDep) -> dict:
    sel = control.Selection(ids=tuple(body.ids or ()), array=body.array, states=control.parse_states(body.state),
                            account=body.account)
    return _changed(request, session, control.cancel_many(session, sel, who.accounts, now(request)))


@router.post("/control/hold", summary="Hold pending jobs: never admitted until released (scontrol hold)",
             responses=errors(*AUTH, *BODY, 404, 409), response_model=Changed)
async def hold(body: JobIds, request: Request, session: SessionDep, who: PrincipalDep) -> dict:
    return _changed(request, session, control.hold(session, body.ids, who.accounts, now(request)))


@router.post("/control/release", summary="Release held jobs (scontrol release)",
             responses=errors(*AUTH, *BODY, 404, 409), response_model=Changed)
async def release(body: JobIds, request: Request, session: SessionDep, who: PrincipalDep) -> dict:
    return _changed(request, session, control.release(session, body.ids, who.accounts, now(request)))


@router.post("/control/requeue", summary="Put running, failed, cancelled or timed-out jobs back in the queue "
             "(scontrol requeue)", responses=errors(*AUTH, *BODY, 404, 409), response_model=Changed)
async def requeue(body: JobIds, request: Request, session: SessionDep, who: PrincipalDep) -> dict:
    return _changed(request, session, control.requeue(session, body.ids, who.accounts, now(request)))


@router.patch("/jobs/{job_id}", summary="Change a pending job's time limit or slices, or lower a running "
              "job's time limit (scontrol update)", responses=errors(*AUTH, *BODY, 404, 409),
              response_model=JobPublic)
async def update(job_id: JobId, body: UpdateRequest, request: Request, session: SessionDep,
                 who: PrincipalDep) -> dict:
    given = {k: getattr(body, k) for k in body.model_fields_set}
    job = control.update(session, job_id, who.accounts, now(request), **given)
    after_commit(session, request.app.state.on_change)
    return jobs.public(session, job)


@router.get("/capacity", tags=["capacity"], summary="Nodes and their slices: total, used, free, GPU type, "
            "state (sinfo)", responses=errors(*AUTH), response_model=list[NodeCapacity])
async def capacity(session: SessionDep, who: PrincipalDep) -> list[dict]:
    return control.nodes(session)
