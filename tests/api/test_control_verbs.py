"""Slurm's verbs through the API on SQLite and PostgreSQL: jobs filters (squeue -t, sacct -S),
cancel many (scancel), hold/release, requeue, update (scontrol), --after, capacity (sinfo)
and sub-accounts under an account with history. A refusal writes nothing."""
from __future__ import annotations

import sqlalchemy as sa

from api_helpers import bearer

HOLD = {"model": "hold", "seconds": 60, "slices": 1}


def submit(client, token, **kw) -> int | list[int]:
    r = client.post("/v1/jobs", json={**HOLD, **kw}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json().get("id", r.json().get("ids"))


def state_rows(engine) -> list[tuple]:
    """Every job, event and gate row: what a refusal must leave as it was."""
    with engine.connect() as conn:
        return [tuple(r) for t in ("job", "job_event", "job_gate")
                for r in conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1")).all()]


def move(engine, job_id: int, to: str, at, **fields) -> None:
    """What the loop would do (the API has no route for it): a guarded transition."""
    from scheduler.store import Job, JobState, session_scope, transition

    with session_scope(engine) as s:
        transition(s, s.get(Job, job_id), JobState(to), at=at, **fields)


def job(client, token, job_id) -> dict:
    r = client.get(f"/v1/jobs/{job_id}", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def refused(client, method, path, token, status, detail, engine, **kw):
    before = state_rows(engine)
    r = client.request(method, path, headers=bearer(token), **kw)
    assert (r.status_code, r.json()["detail"]) == (status, detail), r.text
    assert state_rows(engine) == before


def test_jobs_filters_by_state_since_and_account(seeded, client):
    a, b = seeded.tokens["a"], seeded.tokens["b"]
    first, second = submit(client, a, account="uni-a/vision"), submit(client, a, account="uni-a/nlp")
    assert client.post(f"/v1/jobs/{first}/cancel", headers=bearer(a)).status_code == 200
    seeded.clock.advance(3 * 3600)
    third = submit(client, a, account="uni-a/nlp")

    def ids(token=a, **params):
        r = client.get("/v1/jobs", params=params, headers=bearer(token))
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()]

    assert ids() == [second, third]
    assert ids(state="CANCELLED") == [first]  # a state names finished jobs without all=true
    assert ids(state="pending,cancelled") == ids(state=["PENDING", "CANCELLED"]) == [first, second, third]
    assert ids(since="1h") == [second, third]  # the cancelled one ended 3 h ago (sacct -S)
    assert ids(since="4h") == [first, second, third]
    assert ids(since=seeded.clock().isoformat()) == [second, third]
    assert ids(account="uni-a/nlp", state="PENDING") == [second, third]
    assert ids(b) == [] and ids(b, state="PENDING,CANCELLED") == []  # b sees its own subtree only
    for params, detail in (({"state": "DONE"}, "state must be one of PENDING, RUNNING, SUCCEEDED, FAILED, "
                                                "CANCELLED, TIMEOUT (got 'DONE')"),
                           ({"since": "yesterday"}, "since must be a date (YYYY-MM-DD) or an ISO 8601 time "
                                                    "(got 'yesterday')"),
                           ({"since": "5y"}, "since must be a duration such as 90s, 10m, 2h or 7d, or plain "
                                             "seconds (got '5y')")):
        r = client.get("/v1/jobs", params=params, headers=bearer(a))
        assert (r.status_code, r.json()["detail"]) == (422, detail)
    r = client.get("/v1/jobs", params={"account": "uni-a"}, headers=bearer(b))
    assert r.status_code == 404


def test_cancel_many_by_ids_array_state_and_account(seeded, client):
    a, b, eng = seeded.tokens["a"], seeded.tokens["b"], seeded.engine
    x, y = submit(client, a, account="uni-a/nlp"), submit(client, a, account="uni-a/nlp")
    arr = submit(client, a, account="uni-a/vision", count=3)
    other = submit(client, b)
    assert job(client, a, arr[1])["array_id"] == arr[0] and job(client, a, x)["array_id"] is None
    refused(client, "POST", "/v1/control/cancel", b, 404, f"no job {x}", eng, json={"ids": [other, x]})
    refused(client, "POST", "/v1/control/cancel", a, 404, "no job 999", eng, json={"ids": [x, 999]})
    refused(client, "POST", "/v1/control/cancel", a, 422, "name the jobs: ids, an array, a state or an account", eng,
            json={})
    refused(client, "POST", "/v1/control/cancel", a, 422,
            "cancel --state takes PENDING or RUNNING (finished jobs have nothing to cancel)", eng,
            json={"state": ["FAILED"]})
    r = client.post("/v1/control/cancel", json={"ids": [x, y]}, headers=bearer(a))
    assert (r.status_code, r.json()) == (200, {"ids": [x, y]})
    assert client.changes  # the loop is woken
    refused(client, "POST", "/v1/control/cancel", a, 409, f"job {x} already finished (CANCELLED); nothing cancelled",
            eng, json={"ids": [x]})
    r = client.post("/v1/control/cancel", json={"array": arr[0]}, headers=bearer(a))
    assert r.json() == {"ids": arr}
    refused(client, "POST", "/v1/control/cancel", b, 404, f"no job array {arr[0]}", eng, json={"array": arr[0]})
    more = submit(client, a, account="uni-a/nlp")
    keep = submit(client, a, account="uni-a/vision")
    r = client.post("/v1/control/cancel", json={"state": ["PENDING"], "account": "uni-a/nlp"}, headers=bearer(a))
    assert r.json() == {"ids": [more]}
    assert job(client, a, keep)["state"] == "PENDING" and job(client, b, other)["state"] == "PENDING"
    r = client.post("/v1/control/cancel", json={"state": ["PENDING"]}, headers=bearer(b))  # its own only
    assert r.json() == {"ids": [other]} and job(client, a, keep)["state"] == "PENDING"


def test_hold_and_release(seeded, client):
    a, b, eng = seeded.tokens["a"], seeded.tokens["b"], seeded.engine
    x, y = submit(client, a, account="uni-a/nlp"), submit(client, a, account="uni-a/nlp")
    refused(client, "POST", "/v1/control/release", a, 409, f"job {x} is not held", eng, json={"ids": [x]})
    refused(client, "POST", "/v1/control/hold", b, 404, f"no job {x}", eng, json={"ids": [x]})
    r = client.post("/v1/control/hold", json={"ids": [x, y]}, headers=bearer(a))
    assert (r.status_code, r.json()) == (200, {"ids": [x, y]})
    shown = job(client, a, x)
    assert (shown["state"], shown["reason"]) == ("PENDING", "JobHeldUser")
    assert client.post("/v1/control/hold", json={"ids": [x]}, headers=bearer(a)).status_code == 200  # no change
    listed = client.get("/v1/jobs", headers=bearer(a)).json()
    assert [j["reason"] for j in listed] == ["JobHeldUser", "JobHeldUser"]
    assert client.post("/v1/control/release", json={"ids": [x]}, headers=bearer(a)).json() == {"ids": [x]}
    assert job(client, a, x)["reason"] != "JobHeldUser" and job(client, a, y)["reason"] == "JobHeldUser"
    with seeded.engine.connect() as conn:
        kinds = [k for (k,) in conn.execute(sa.text(f"SELECT kind FROM job_event WHERE job_id = {x} ORDER BY id"))]
    assert kinds == ["submitted", "held", "released"]
    client.post(f"/v1/jobs/{x}/cancel", headers=bearer(a))
    refused(client, "POST", "/v1/control/hold", a, 409, f"job {x} is CANCELLED: only pending jobs can be held", eng,
            json={"ids": [y, x]})


def test_requeue_running_and_ended_jobs(seeded, client):
    a, eng, at = seeded.tokens["a"], seeded.engine, seeded.clock()
    run, failed, done, waiting = (submit(client, a, account="uni-a/nlp") for _ in range(4))
    move(eng, run, "RUNNING", at, node="n1", gpu_slices=[[0, 1]])
    for j, end in ((failed, "FAILED"), (done, "SUCCEEDED")):
        move(eng, j, "RUNNING", at, node="n1", gpu_slices=[[0, 1]])
        move(eng, j, end, at, error="boom" if end == "FAILED" else None, failures=1)
    refused(client, "POST", "/v1/control/requeue", a, 409, f"job {done} is SUCCEEDED: only running or failed, "
            "cancelled or timed-out jobs can be requeued (submit it again)", eng, json={"ids": [run, done]})
    refused(client, "POST", "/v1/control/requeue", a, 409, f"job {waiting} is PENDING: only running or failed, "
            "cancelled or timed-out jobs can be requeued (it is waiting already)", eng, json={"ids": [waiting]})
    r = client.post("/v1/control/requeue", json={"ids": [run, failed]}, headers=bearer(a))
    assert r.json() == {"ids": [run, failed]}
    for j in (run, failed):
        shown = job(client, a, j)
        assert (shown["state"], shown["node"], shown["finished_at"], shown["error"]) == ("PENDING", None, None, None)
    from scheduler.store import Job, session_scope

    with session_scope(eng) as s:
        assert s.get(Job, failed).failures == 0 and s.get(Job, failed).attempts == 1  # history kept


def test_update_pending_and_running_jobs(seeded, client):
    from scheduler.services import accounts
    from scheduler.store import session_scope

    a, eng = seeded.tokens["a"], seeded.engine
    with session_scope(eng) as s:
        accounts.set_account(s, "uni-a/nlp", cap=4, max_time_s=7200)
    x = submit(client, a, account="uni-a/nlp", time_limit_s=3600)
    r = client.patch(f"/v1/jobs/{x}", json={"slices": 2, "time_limit_s": 1800}, headers=bearer(a))
    assert r.status_code == 200, r.text
    assert (r.json()["slices"], r.json()["time_limit_s"]) == (2, 1800)
    refused(client, "PATCH", f"/v1/jobs/{x}", a, 422, "8 slices are over account uni-a/nlp's cap of 4 slices", eng,
            json={"slices": 8})
    refused(client, "PATCH", f"/v1/jobs/{x}", a, 422, "time limit 3h exceeds the maximum of 2h for account "
            "uni-a/nlp", eng, json={"time_limit_s": 10800})
    refused(client, "PATCH", f"/v1/jobs/{x}", a, 422, "give a new time limit or slices", eng, json={})
    assert client.patch(f"/v1/jobs/{x}", json={"slices": 0}, headers=bearer(a)).status_code == 422
    refused(client, "PATCH", f"/v1/jobs/{x}", seeded.tokens["b"], 404, f"no job {x}", eng, json={"slices": 1})
    move(eng, x, "RUNNING", seeded.clock(), node="n1", gpu_slices=[[0, 2]])
    refused(client, "PATCH", f"/v1/jobs/{x}", a, 409, f"job {x} is RUNNING: its time limit can only be lowered "
            "(now 30m)", eng, json={"time_limit_s": 3600})
    refused(client, "PATCH", f"/v1/jobs/{x}", a, 409, f"job {x} is RUNNING: only a pending job's slices can change "
            "(requeue it first)", eng, json={"slices": 1})
    r = client.patch(f"/v1/jobs/{x}", json={"time_limit_s": 600}, headers=bearer(a))
    assert (r.status_code, r.json()["time_limit_s"]) == (200, 600)
    with eng.connect() as conn:
        kinds = [k for (k,) in conn.execute(sa.text(f"SELECT kind FROM job_event WHERE job_id = {x} ORDER BY id"))]
    assert kinds == ["submitted", "updated", "admitted", "updated"]


def test_after_waits_for_success_and_never_for_a_failure(seeded, client):
    a, b, eng = seeded.tokens["a"], seeded.tokens["b"], seeded.engine
    first, second = submit(client, a, account="uni-a/nlp"), submit(client, a, account="uni-a/nlp")
    later = submit(client, a, account="uni-a/vision", after=[first, second])
    assert job(client, a, later)["reason"] == "Dependency"
    refused(client, "POST", "/v1/jobs", b, 404, f"no job {first}", eng, json={**HOLD, "after": [first]})
    refused(client, "POST", "/v1/jobs", a, 404, "no job 999", eng, json={**HOLD, "account": "uni-a/nlp",
                                                                       "after": [999]})
    at = seeded.clock()
    for j in (first, second):
        move(eng, j, "RUNNING", at, node="n1", gpu_slices=[[0, 1]])
    move(eng, first, "SUCCEEDED", at)
    assert job(client, a, later)["reason_message"] == f"waits for jobs {second} to succeed"
    move(eng, second, "SUCCEEDED", at)
    assert job(client, a, later)["reason"] not in ("Dependency", "DependencyNeverSatisfied")
    doomed = submit(client, a, account="uni-a/vision", after=[first, later])
    client.post(f"/v1/jobs/{later}/cancel", headers=bearer(a))
    shown = job(client, a, doomed)
    assert (shown["state"], shown["reason"]) == ("PENDING", "DependencyNeverSatisfied")
    assert shown["reason_message"] == f"it starts after jobs that will never succeed: {later} (CANCELLED)"
    client.post("/v1/control/requeue", json={"ids": [later]}, headers=bearer(a))  # requeued: it may succeed again
    assert job(client, a, doomed)["reason"] == "Dependency"


def test_capacity_view_for_institutions(seeded, client):
    a = seeded.tokens["a_vision"]
    x = submit(client, a)
    move(seeded.engine, x, "RUNNING", seeded.clock(), node="n1", gpu_slices=[[0, 3]])
    r = client.get("/v1/capacity", headers=bearer(a))
    assert r.status_code == 200, r.text
    assert r.json() == [{"node": "n1", "gpu_type": "T4", "gpus": 2, "slices_per_gpu": 4, "slices_total": 8,
                         "slices_used": 3, "slices_free": 5, "state": "mixed", "reason": None, "frameworks": None}]
    assert client.get("/v1/capacity").status_code == 401


def test_sub_accounts_under_an_account_with_history(seeded, client):
    from datetime import timedelta

    from scheduler.services import report
    from scheduler.store import Job, UsageRecord, session_scope

    admin, b = seeded.tokens["admin"], seeded.tokens["b"]
    x = submit(client, b)
    new = {"name": "uni-b/lab", "weight": 1, "parent": "uni-b"}
    refused(client, "POST", "/v1/admin/accounts", admin, 409,
            "account uni-b has jobs of its own; jobs run on leaf accounts only", seeded.engine, json=new)
    move(seeded.engine, x, "RUNNING", seeded.clock(), node="n1", gpu_slices=[[0, 1]])
    seeded.clock.advance(3600)
    move(seeded.engine, x, "SUCCEEDED", seeded.clock())
    with session_scope(seeded.engine) as s:
        s.add(UsageRecord(account_id=s.get(Job, x).account_id, job_id=x, slice_seconds=3600.0, at=seeded.clock()))
    r = client.post("/v1/admin/accounts", json=new, headers=bearer(admin))
    assert r.status_code == 201, r.text
    assert client.post("/v1/jobs", json=HOLD, headers=bearer(b)).status_code == 422  # uni-b is inner now
    assert submit(client, b, account="uni-b/lab")
    with session_scope(seeded.engine) as s:  # the report keeps uni-b's own past usage
        got = report.report(s, since=seeded.clock() - timedelta(hours=2), until=seeded.clock() + timedelta(seconds=1))
    rows = {row["account"]: row for row in got["accounts"]}
    assert (rows["uni-b"]["slice_hours"], rows["uni-b/lab"]["slice_hours"]) == (1.0, 0.0)
    assert (rows["uni-b"]["jobs_succeeded"], rows["uni-b"]["held_slice_hours"]) == (1, 1.0)
