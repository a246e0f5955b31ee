"""Job arrays (``count`` in POST /v1/jobs): all checked before one insert, all or nothing."""
from __future__ import annotations

import pytest

from quota import limits
from scheduler.services import jobs
from scheduler.services.errors import DomainError
from scheduler.store import JobState, session_scope

from api_helpers import T0, bearer

HOLD = dict(model="hold", framework=None, mode="train", slices=1, spec={"seconds": 5})
ARRAY = {"model": "hold", "seconds": 5, "slices": 1, "account": "uni-a/nlp", "count": 4}


def test_an_array_is_count_pending_jobs_in_queue_order(seeded):
    with session_scope(seeded.engine) as s:
        ids = jobs.submit_array(s, count=5, account="uni-a/nlp", at=T0, **HOLD)
    assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5
    with session_scope(seeded.engine) as s:
        rows = [jobs.get_job(s, i, None) for i in ids]
        events = {i: [e.kind for e in jobs.job_events(s, i)] for i in ids}
        single = jobs.get_job(s, jobs.submit_array(s, count=1, account="uni-a/nlp", at=T0, **HOLD)[0], None)
    for job in rows:
        assert job.state == JobState.PENDING and job.spec == {"seconds": 5} and job.slices == 1
        assert job.queue_seq == single.queue_seq and job.submitted_at == T0 and job.version == single.version
        assert (job.attempts, job.preemptions, job.gpu_slices, job.result) == (0, 0, [], None)
    assert all(kinds == ["submitted"] for kinds in events.values())


REFUSED = {
    # what: (body changes, status, phrase)
    "count zero": ({"count": 0}, 422, f"count must be {limits.JOB_COUNT.describe()} (got 0)"),
    "count negative": ({"count": -3}, 422, "count must be"),
    "count too large": ({"count": 1001}, 422, "count must be"),
    "count as text": ({"count": "4"}, 422, "count: Input should be a valid integer"),
    "count as bool": ({"count": True}, 422, "count: Input should be a valid integer"),
    "a bad job": ({"model": "alexnet"}, 422, "unknown model"),
    "a shape no node fits": ({"slices": 9}, 422, "more than any node holds"),
    "someone else's account": ({"account": "uni-b"}, 404, "unknown account uni-b"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_arrays_write_nothing(seeded, client, case):
    changes, status, phrase = REFUSED[case]
    before = seeded.counts()
    r = client.post("/v1/jobs", json={**ARRAY, **changes}, headers=bearer(seeded.tokens["a"]))
    assert r.status_code == status and phrase in r.json()["detail"], r.text
    assert seeded.counts() == before and client.changes == []


def test_the_api_answers_ids_and_wakes_the_loop_once(seeded, client):
    r = client.post("/v1/jobs", json=ARRAY, headers=bearer(seeded.tokens["a"]))
    assert r.status_code == 201 and set(r.json()) == {"ids"} and len(r.json()["ids"]) == 4
    assert len(client.changes) == 1
    r = client.post("/v1/jobs", json={**ARRAY, "count": None}, headers=bearer(seeded.tokens["a"]))
    assert r.status_code == 201 and set(r.json()) == {"id"}


def test_the_pending_limit_counts_the_whole_array(seeded, client):
    h, mine = bearer(seeded.tokens["a_vision"]), {"model": "hold", "seconds": 5, "slices": 1}
    before = seeded.counts()
    r = client.post("/v1/jobs", json={**mine, "count": 4}, headers=h)  # limit 3: none of the 4 is stored
    assert r.status_code == 409 and "4 more jobs would put account uni-a/vision over its limit of 3" in r.text
    assert seeded.counts() == before and client.changes == []
    assert client.post("/v1/jobs", json={**mine, "count": 3}, headers=h).status_code == 201
    r = client.post("/v1/jobs", json={**mine, "count": 1}, headers=h)
    assert r.status_code == 409 and "limit of 3 pending jobs" in r.text


def test_an_error_after_the_insert_rolls_the_whole_array_back(seeded):
    before = seeded.counts()
    with pytest.raises(DomainError), session_scope(seeded.engine) as s:
        jobs.submit_array(s, count=7, account="uni-a/nlp", at=T0, **HOLD)
        raise DomainError("the request failed after the insert")
    assert seeded.counts() == before
