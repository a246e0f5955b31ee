"""Job services on SQLite and PostgreSQL: submit checks everything before it writes."""
from __future__ import annotations

import pytest

from quota.limits import LimitError
from scheduler.services import accounts, jobs
from scheduler.services.errors import DomainError, NotFound
from scheduler.store import JobState, session_scope, transition

from api_helpers import T0

HOLD = dict(model="hold", framework=None, mode="train", slices=1, spec={"seconds": 5})
RESNET = dict(model="resnet18", framework="pytorch", mode="train", slices=2, spec={"steps": 10, "batch_size": 32})


def submit(seeded, account="uni-a/vision", accounts_=None, **kw):
    args = {**HOLD, **kw}
    with session_scope(seeded.engine) as s:
        return jobs.submit_array(s, count=1, account=account, at=T0, accounts=accounts_, **args)[0]


def test_submit_stores_a_pending_job_with_its_event(seeded):
    jid = submit(seeded, **RESNET)
    with session_scope(seeded.engine) as s:
        job = jobs.get_job(s, jid, None)
        events = jobs.job_events(s, jid)
        public = jobs.public(s, job)
    assert job.state == JobState.PENDING and job.spec == {"steps": 10, "batch_size": 32}
    assert [e.kind for e in events] == ["submitted"]
    assert list(public) == list(jobs.PUBLIC_KEYS)
    assert public["account"] == "uni-a/vision" and public["submitted_at"] == T0.isoformat()


BAD = {
    "unknown model": (dict(model="alexnet", framework="pytorch", spec={}), jobs.InvalidJob, "unknown model"),
    "no framework": (dict(model="vgg16", framework=None, spec={}), jobs.InvalidJob, "needs a framework"),
    "bad framework": (dict(model="vgg16", framework="jax", spec={}), jobs.InvalidJob, "needs a framework"),
    "hold with framework": (dict(framework="pytorch"), jobs.InvalidJob, "no framework"),
    "hold without seconds": (dict(spec={}), jobs.InvalidJob, "needs seconds"),
    "negative seconds": (dict(spec={"seconds": -1}), LimitError, "seconds must be"),
    "zero slices": (dict(slices=0), LimitError, "slices must be"),
    "negative slices": (dict(slices=-2), LimitError, "slices must be"),
    "bad mode": (dict(mode="serve"), jobs.InvalidJob, "mode must be"),
    "zero steps": (dict(model="conv6", framework="pytorch", spec={"steps": 0}), LimitError, "steps must be"),
    "stray spec key": (dict(spec={"seconds": 1, "steps": 3}), jobs.InvalidJob, "take no steps"),
    "more than a node": (dict(slices=9), jobs.InvalidJob, "more than any node holds"),
    "spans GPUs unevenly": (dict(slices=6), jobs.InvalidJob, "whole number of GPUs"),
    "unknown account": (dict(account="uni-z"), NotFound, "unknown account uni-z"),
    "inner account": (dict(account="uni-a"), jobs.InvalidJob, "leaf accounts"),
    "not the caller's": (dict(account="uni-b", accounts_=frozenset({"uni-a", "uni-a/vision"})), NotFound,
                         "unknown account uni-b"),
}


def test_bad_submissions_are_refused_and_write_nothing(seeded):
    before = seeded.counts()
    for case, (kwargs, error, message) in BAD.items():
        with pytest.raises(error, match=message):
            submit(seeded, **kwargs)
        assert seeded.counts() == before, case


def test_pending_limit_of_the_account_and_of_its_ancestors(seeded):
    for _ in range(3):
        submit(seeded)
    before = seeded.counts()
    with pytest.raises(DomainError, match="limit of 3 pending"):
        submit(seeded)
    assert seeded.counts() == before
    with session_scope(seeded.engine) as s:  # the institution's limit covers its other leaf too
        accounts.set_account(s, "uni-a", max_pending=4)
    submit(seeded, account="uni-a/nlp")
    with pytest.raises(DomainError, match="uni-a's limit of 4"):
        submit(seeded, account="uni-a/nlp")
    with session_scope(seeded.engine) as s:  # a started job no longer counts as pending
        job = jobs.list_jobs(s, accounts=None)[0]
        transition(s, job, JobState.RUNNING, at=T0, node="n1", gpu=0, gpu_slices=[[0, 1]])
    submit(seeded, account="uni-a/nlp")


def test_listing_is_limited_to_the_callers_accounts(seeded):
    a = frozenset({"uni-a", "uni-a/vision", "uni-a/nlp"})
    ja, jb = submit(seeded), submit(seeded, account="uni-b")
    with session_scope(seeded.engine) as s:
        assert [j.id for j in jobs.list_jobs(s, accounts=a)] == [ja]
        assert [j.id for j in jobs.list_jobs(s, accounts=None)] == [ja, jb]
        assert [j.id for j in jobs.list_jobs(s, accounts=None, account="uni-a")] == [ja]
        with pytest.raises(NotFound, match="unknown account uni-b"):
            jobs.list_jobs(s, accounts=a, account="uni-b")
        with pytest.raises(NotFound, match=f"no job {jb}"):
            jobs.get_job(s, jb, a)
        with pytest.raises(NotFound, match="no job 999"):
            jobs.get_job(s, 999, a)


def test_cancel_pending_and_running_but_not_finished(seeded):
    a = frozenset({"uni-a", "uni-a/vision", "uni-a/nlp"})
    j1, j2 = submit(seeded), submit(seeded)
    with session_scope(seeded.engine) as s:
        transition(s, jobs.get_job(s, j2, None), JobState.RUNNING, at=T0, node="n1", gpu=0, gpu_slices=[[0, 1]])
    with session_scope(seeded.engine) as s:
        assert jobs.cancel(s, j1, a, T0).state == JobState.CANCELLED
        assert jobs.cancel(s, j2, a, T0).state == JobState.CANCELLED
    with pytest.raises(DomainError, match="already finished"):
        with session_scope(seeded.engine) as s:
            jobs.cancel(s, j1, a, T0)
    with pytest.raises(NotFound):
        with session_scope(seeded.engine) as s:
            jobs.cancel(s, j1, frozenset({"uni-b"}), T0)
    with session_scope(seeded.engine) as s:
        assert [e.kind for e in jobs.job_events(s, j2)] == ["submitted", "admitted", "cancelled"]
        assert [j.id for j in jobs.list_jobs(s, accounts=a)] == []
        assert [j.id for j in jobs.list_jobs(s, accounts=a, include_finished=True)] == [j1, j2]
