"""The period report: ``GET /v1/report`` (``fairgpu report`` in client mode).

Thin over ``services.report``: it reads in the request's transaction and computes in
the thread pool, so a long report does not hold up other requests. The admin sees every
account (or ``account``'s subtree); an institution's token its own subtree, and an
account outside it is 404, as for ``/v1/share``. Bad dates are 422 with one line; a
report writes nothing.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from scheduler.api.deps import PrincipalDep, SessionDep, now
from scheduler.api.openapi import AUTH, AccountQuery, errors
from scheduler.services import report as reports

router = APIRouter(tags=["report"])

_WHEN = "a date (YYYY-MM-DD, midnight UTC) or an ISO 8601 time (UTC without a zone)"
SinceQuery = Annotated[str | None, Query(description=f"Start of the period: {_WHEN}; default "
                                         f"{reports.DEFAULT_DAYS} days before its end", min_length=1, max_length=64)]
UntilQuery = Annotated[str | None, Query(description=f"End of the period (excluded): {_WHEN}; default and "
                                         "at most now", min_length=1, max_length=64)]
BucketsQuery = Annotated[int, Query(description="Also return this many equal time buckets of mean owed and "
                                    f"held slices per account (0 to {reports.MAX_BUCKETS}; 0: none)",
                                    ge=0, le=reports.MAX_BUCKETS)]


@router.get("/report", summary="Who used what over a period, and was it fair (an institution sees its own subtree)",
            responses=errors(*AUTH, 404, 422))
async def report(
    request: Request, session: SessionDep, who: PrincipalDep,
    since: SinceQuery = None, until: UntilQuery = None, account: AccountQuery = None, buckets: BucketsQuery = 0,
) -> dict:
    start, end = reports.period(since, until, now(request))
    under = account if account is not None else who.account
    loaded = reports.load(session, since=start, until=end, under=under, visible=who.accounts, buckets=buckets)
    return await run_in_threadpool(reports.compute, loaded)  # seconds for a busy month: off the event loop
