"""A constructed history for the report tests, with its figures worked out by hand.

Capacity 4 slices (one T4 of 4). Accounts: north (weight 3) with north/cv and north/nlp
(weight 1 each), south (weight 1). The period is T to T+4h; times below in hours from T.

    job  account    slices  life
    j1   north/cv   4       admitted -1 (submitted -1), SUCCEEDED 2
    j2   south      2       submitted 1, admitted 2, preempted 3, admitted 3.5, still running
    j3   north/nlp  2       submitted 2, admitted 2.5, TIMEOUT 3
    j4   north/nlp  1       submitted 3, CANCELLED 3.25 (never ran)
    j6   north/cv   1       submitted 2, admitted 3, FAILED 3.5

Entitlements (water-filling of 4 slices over held + waiting; north:south = 3:1):
[0,1) cv 4 | [1,2) north 3 (cv 3), south 1 | [2,3) north 3 (cv 1, nlp 2), south 1 |
[3,3.25) north 2 (cv 1, nlp 1), south 2 | [3.25,3.5) north 1 (cv 1), south 2 | [3.5,4) south 2.

Usage records (slice-seconds at): cv 7200 at -0.5 (before the period), 14400 at 1 and 2,
1800 at 3.5; nlp 3600 at 3; south 7200 at 3 and 3600 at 4 (the end: excluded); north
itself 3600 at 1 (imported history).
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

T = datetime(2026, 11, 2, tzinfo=UTC)
UNTIL = T + timedelta(hours=4)


def at(hours: float) -> datetime:
    return T + timedelta(hours=hours)


# account: (slice_hours, held, owed, waiting_h, starved_h, succeeded, failed, cancelled, timeout, preemptions,
#           wait_p50_s, wait_p95_s)
EXPECTED = {
    "north": (10.5, 9.5, 10.75, 1.25, 0.5, 1, 1, 1, 1, 0, 2700.0, 3510.0),
    "north/cv": (8.5, 8.5, 8.5, 1.0, 1.0, 1, 1, 0, 0, 0, 3600.0, 3600.0),
    "north/nlp": (1.0, 1.0, 2.25, 0.75, 0.75, 0, 0, 1, 1, 0, 1800.0, 1800.0),
    "south": (2.0, 3.0, 4.0, 1.5, 1.5, 0, 0, 0, 0, 1, 3600.0, 3600.0),
}
CAPACITY_SLICE_HOURS = 16.0
UTILISATION = 12.5 / 16
JAIN = (9.5 / 10.75 + 0.75) ** 2 / (2 * ((9.5 / 10.75) ** 2 + 0.75 ** 2))


def build(engine) -> None:
    from scheduler.loop.apply import insert_usage
    from scheduler.services import accounts, capacity
    from scheduler.store import Job, JobState, session_scope, transition
    from scheduler.store.transitions import submit_jobs

    with session_scope(engine) as s:
        capacity.set_node(s, node="gpu-1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=at(-2))
        ids = {}
        for name, weight, parent in (("north", 3, None), ("north/cv", 1, "north"), ("north/nlp", 1, "north"),
                                     ("south", 1, None)):
            ids[name] = accounts.add_account(s, name, weight=weight, parent=parent).id

    R, P = JobState.RUNNING, JobState.PENDING

    def job(s, account, slices, submitted, *moves):
        (job_id,) = submit_jobs(s, count=1, account_id=ids[account], model="hold", framework=None, mode="train",
                                slices=slices, spec={}, at=at(submitted))
        j = s.get(Job, job_id)
        for to, when, event in moves:
            j = transition(s, j, to, at=at(when), event=event)

    with session_scope(engine) as s:
        job(s, "north/cv", 4, -1, (R, -1, None), (JobState.SUCCEEDED, 2, None))
        job(s, "south", 2, 1, (R, 2, None), (P, 3, "preempted"), (R, 3.5, None))
        job(s, "north/nlp", 2, 2, (R, 2.5, None), (JobState.TIMEOUT, 3, None))
        job(s, "north/nlp", 1, 3, (JobState.CANCELLED, 3.25, None))
        job(s, "north/cv", 1, 2, (R, 3, None), (JobState.FAILED, 3.5, None))
        charges = [("north/cv", 7200, -0.5), ("north/cv", 14400, 1), ("north/cv", 14400, 2), ("north/cv", 1800, 3.5),
                   ("north/nlp", 3600, 3), ("south", 7200, 3), ("south", 3600, 4), ("north", 3600, 1)]
        insert_usage(s, [{"account_id": ids[a], "job_id": None, "slice_seconds": v, "at": at(h)}
                         for a, v, h in charges])
