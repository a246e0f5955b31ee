"""Group commit of submissions (scheduler.services.committer), on SQLite and PostgreSQL.

Concurrent POST /v1/jobs go through one committer; each accepted one is stored exactly
once, pending limits hold exactly under a race, a refused or failing submission leaves
its neighbours in the batch alone, a batch checks all its tokens in one query, and the
loop is woken only once the batch is durable.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest
import sqlalchemy as sa
from api_helpers import bearer

HOLD = {"model": "hold", "slices": 1, "seconds": 1}


def _app(seeded, on_change=None, **kw):
    from scheduler.api import create_app

    return create_app(seeded.engine, clock=seeded.clock, on_change=on_change, **kw)


def _post_all(app, requests: list[tuple[str, dict]]) -> list:
    """Send every (token, body) at once from one event loop; the responses in order."""
    import httpx

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await asyncio.gather(*(http.post("/v1/jobs", json=body, headers=bearer(token))
                                          for token, body in requests))

    return asyncio.run(main())


def _jobs(engine) -> list[tuple[int, int]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text("SELECT id, account_id FROM job ORDER BY id"))]


def test_concurrent_submissions_are_each_stored_exactly_once(seeded):
    app = _app(seeded)
    requests = [(seeded.tokens[t], {**HOLD, **({"count": 3} if i % 5 == 0 else {})})
                for i, t in enumerate(["a", "b", "admin"] * 20)]
    for token, body in requests:
        if token != seeded.tokens["b"]:  # uni-a has sub-accounts: a and the admin name one
            body["account"] = "uni-a/nlp"
    answers = _post_all(app, requests)
    assert [r.status_code for r in answers] == [201] * len(requests), answers[0].text
    ids = [i for r in answers for i in r.json().get("ids", [r.json().get("id")])]
    rows = _jobs(seeded.engine)
    assert len(ids) == len(set(ids)) == len(rows) == 60 + 2 * 12  # every 5th is an array of 3
    assert sorted(ids) == [i for i, _ in rows]
    with seeded.engine.connect() as c:
        events = c.execute(sa.text("SELECT count(*), count(DISTINCT job_id) FROM job_event")).one()
    assert tuple(events) == (len(rows), len(rows))
    assert app.state.committer.pieces == len(requests)
    assert app.state.committer.batches < len(requests)  # some were committed together


def test_a_race_past_a_pending_limit_accepts_exactly_the_limit(seeded):
    # uni-a/vision allows 3 pending jobs; 12 clients race for them
    app = _app(seeded)
    answers = _post_all(app, [(seeded.tokens["a_vision"], HOLD)] * 12)
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 3 + [409] * 9
    assert all("limit of 3 pending" in r.json()["detail"] for r in answers if r.status_code == 409)
    assert len(_jobs(seeded.engine)) == 3


def test_two_servers_racing_past_a_limit_accept_exactly_the_limit(seeded):
    """Two apps, two committers, two engines (two server processes would do the same):
    the limit is kept by the database's locks, not by the one committer."""
    from scheduler.store import make_engine

    other = make_engine(seeded.engine.url.render_as_string(hide_password=False))
    try:
        apps = [_app(seeded), _app(seeded)]
        apps[1].state.engine = other
        apps[1].state.committer.engine = other
        answers: list = [None, None]

        def go(i):
            answers[i] = _post_all(apps[i], [(seeded.tokens["a_vision"], HOLD)] * 8)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.dispose()
    codes = sorted(r.status_code for both in answers for r in both)
    assert codes == [201] * 3 + [409] * 13
    assert len(_jobs(seeded.engine)) == 3


def _committer(seeded, **kw):
    from scheduler.services.committer import Committer
    from scheduler.services.jobs import write_arrays

    return Committer(seeded.engine, flush=write_arrays, **kw)


def _held_batch(committer, works, savepoint=True):
    """Run `works` as one batch: a first piece holds the committer's thread until all of
    them are queued behind it. A work is a callable, or (callable, prepare) as the submit
    route queues it. Returns their futures."""
    gate = threading.Event()
    first = committer.submit(lambda s: gate.wait(10))
    futures = []
    for w in works:
        work, prepare = w if isinstance(w, tuple) else (w, None)
        futures.append(committer.submit(work, savepoint=savepoint, prepare=prepare))
    gate.set()
    first.result(10)
    concurrent.futures.wait(futures, timeout=10)
    return futures


def _submitter(seeded, token, prepared=False, **body):
    """A submission as the route queues it: with ``prepared``, its token is checked with the
    batch's others (``authorize_batch``) before the pieces run."""
    import functools

    from scheduler.api.deps import authorize_batch
    from scheduler.api.routes_jobs import _submit
    from scheduler.api.schemas import SubmitRequest

    raw, at = seeded.tokens[token], seeded.clock()
    work = functools.partial(_submit, token=raw, body=SubmitRequest(**{**HOLD, **body}), at=at, root=None)
    return (work, (authorize_batch, (raw, at))) if prepared else work


@pytest.mark.parametrize("prepared", [False, True], ids=["own-token-query", "batch-token-query"])
@pytest.mark.parametrize("savepoint", [True, False], ids=["savepoints", "no-savepoints"])
def test_refused_and_failing_submissions_do_not_fail_their_neighbours(seeded, savepoint, prepared):
    """With savepoints the broken piece is rolled back alone; without, it aborts the
    batch and every piece runs again alone: either way the same answers."""
    from fastapi import HTTPException

    from scheduler.services.errors import DomainError, NotFound, domain_classes

    def broken(s):  # a database error in the middle of a piece
        s.connection().exec_driver_sql("INSERT INTO job (no_such_column) VALUES (1)")

    committer = _committer(seeded, refusals=(*domain_classes(), HTTPException))
    p = prepared
    works = [_submitter(seeded, "a_vision", p), _submitter(seeded, "a_vision", p, count=3),  # over the limit of 3
             _submitter(seeded, "a", p, account="uni-x"), broken, _submitter(seeded, "revoked", p),
             _submitter(seeded, "a_vision", p, count=2), _submitter(seeded, "b", p)]
    futures = _held_batch(committer, works, savepoint)
    assert committer.batches == 2  # the gate's piece, then the seven together
    assert committer.failed_batches == (0 if savepoint else 1)
    outcomes = [f.exception(10) for f in futures]
    assert isinstance(outcomes[1], DomainError) and "limit of 3" in str(outcomes[1])
    assert isinstance(outcomes[2], NotFound)
    assert isinstance(outcomes[3], sa.exc.DBAPIError)
    assert isinstance(outcomes[4], HTTPException) and outcomes[4].status_code == 401
    assert [o is None for o in outcomes] == [True, False, False, False, False, True, True]
    accepted = [futures[i].result()["ids"] if "ids" in futures[i].result() else [futures[i].result()["id"]]
                for i in (0, 5, 6)]
    assert sorted(i for ids in accepted for i in ids) == [i for i, _ in _jobs(seeded.engine)]
    assert len(_jobs(seeded.engine)) == 4  # 1 + 2 for vision (its limit, exactly), 1 for uni-b


def test_a_failed_commit_runs_each_piece_alone(seeded):

    failed = []

    def fail_commit_once(s):
        def boom(session):
            if not failed and not session.in_nested_transaction():  # the batch's own commit
                failed.append(1)
                raise RuntimeError("the commit failed")
        sa.event.listen(s, "before_commit", boom)
        return "fine"

    committer = _committer(seeded)
    futures = _held_batch(committer, [_submitter(seeded, "b"), fail_commit_once, _submitter(seeded, "a_vision")])
    assert failed == [1] and committer.failed_batches == 1
    assert [f.exception(10) for f in futures] == [None, None, None]
    assert len(_jobs(seeded.engine)) == 2  # each stored once, by its own transaction


def test_the_loop_is_woken_after_the_batch_is_durable(seeded):
    seen: list[int] = []

    def on_change():  # what the loop would see: a fresh connection reads committed rows only
        seen.append(len(_jobs(seeded.engine)))

    app = _app(seeded, on_change=on_change)
    answers = _post_all(app, [(seeded.tokens["b"], HOLD)] * 10)
    assert all(r.status_code == 201 for r in answers)
    assert seen and seen[-1] == 10
    assert len(seen) == app.state.committer.batches  # once per batch, not per submission
    assert all(n > 0 for n in seen)


def test_a_refused_batch_does_not_wake_the_loop(seeded):
    seen: list[int] = []
    app = _app(seeded, on_change=lambda: seen.append(1))
    answers = _post_all(app, [(seeded.tokens["a"], {**HOLD, "account": "uni-x"})] * 3)
    assert [r.status_code for r in answers] == [404] * 3
    assert seen == [] and _jobs(seeded.engine) == []


def test_the_committer_thread_exits_when_idle_and_comes_back(seeded):

    committer = _committer(seeded, idle_exit_s=0.05)
    assert committer.submit(_submitter(seeded, "b")).result(10)["id"]
    thread = committer._thread
    thread.join(5)
    assert not thread.is_alive()
    assert committer.submit(_submitter(seeded, "b")).result(10)["id"]
    assert len(_jobs(seeded.engine)) == 2


def test_refusals_without_savepoints_stay_in_the_batch(seeded):

    committer = _committer(seeded)
    works = [_submitter(seeded, "a_vision", count=2), _submitter(seeded, "a_vision", count=2),
             _submitter(seeded, "a_vision")]
    futures = _held_batch(committer, works, savepoint=False)
    assert [f.exception(10) is None for f in futures] == [True, False, True]
    assert committer.batches == 2 and committer.failed_batches == 0 and len(_jobs(seeded.engine)) == 3


def test_a_failed_piece_keeps_the_counts_of_the_planned_jobs_before_it(seeded):
    """The first job is planned, not yet written, when the broken piece rolls back its
    savepoint: the batch still counts it, so the array of 3 after it is over the limit."""
    committer = _committer(seeded)

    def broken(s):
        s.connection().exec_driver_sql("INSERT INTO job (no_such_column) VALUES (1)")

    futures = _held_batch(committer, [_submitter(seeded, "a_vision"), broken, _submitter(seeded, "a_vision", count=3),
                                      _submitter(seeded, "a_vision", count=2)])
    assert [f.exception(10) is None for f in futures] == [True, False, False, True]
    assert committer.failed_batches == 0 and len(_jobs(seeded.engine)) == 3


@pytest.mark.parametrize("token,body,status", [
    ("revoked", {"slices": 1}, 401),       # a bad token is answered before a bad body
    ("revoked", "{not json", 401),
    ("a_vision", {"slices": 1}, 422),      # a good token: the body's own error
    ("a_vision", "{not json", 400),
])
def test_a_bad_token_is_answered_before_a_bad_body(seeded, token, body, status):
    from fastapi.testclient import TestClient

    with TestClient(_app(seeded)) as http:
        headers = {**bearer(seeded.tokens[token]), "content-type": "application/json"}
        r = http.post("/v1/jobs", content=body if isinstance(body, str) else None,
                      json=None if isinstance(body, str) else body, headers=headers)
    assert r.status_code == status, r.text
    assert _jobs(seeded.engine) == []


def test_a_batch_checks_its_tokens_in_one_query_and_each_gets_its_own_answer(seeded):
    """A good token, a revoked, an expired and a scrape one in one batch: one SELECT and one
    UPDATE of api_token for them all, each submission the answer its own token earns, and
    last_used_at stamped on the tokens that were accepted, only."""
    from fastapi import HTTPException

    from scheduler.services import auth
    from scheduler.services.errors import domain_classes
    from scheduler.store import session_scope

    with session_scope(seeded.engine) as s:
        seeded.tokens["scrape"] = auth.issue_token(s, account=None, name="prom", expires_s=None, at=seeded.clock(),
                                                   scope=auth.SCRAPE)
    seeded.clock.advance(5)
    names = ["a_vision", "revoked", "expired", "scrape", "b", "a_vision"]
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()).lower())

    committer = _committer(seeded, refusals=(*domain_classes(), HTTPException))
    sa.event.listen(seeded.engine, "before_cursor_execute", seen)
    try:
        futures = _held_batch(committer, [_submitter(seeded, n, prepared=True) for n in names])
    finally:
        sa.event.remove(seeded.engine, "before_cursor_execute", seen)
    assert committer.batches == 2 and committer.failed_batches == 0  # the gate's piece, then the six together
    outcomes = [f.exception(10) for f in futures]
    assert [getattr(o, "status_code", o) for o in outcomes] == [None, 401, 401, 403, None, None]
    assert outcomes[1].detail == outcomes[2].detail == "invalid, expired or revoked token"
    assert outcomes[3].detail == "a scrape token can read /metrics only"
    assert len(_jobs(seeded.engine)) == 3
    assert len([q for q in statements if q.startswith("select") and "from api_token" in q]) == 1
    assert len([q for q in statements if q.startswith("update api_token")]) == 1
    with session_scope(seeded.engine) as s:
        stamped = {n: auth.token_row(s, seeded.tokens[n]).last_used_at for n in names}
    # the scrape token was accepted as a token (stamped), then refused by scope, as before
    assert stamped == {"a_vision": seeded.clock(), "b": seeded.clock(), "scrape": seeded.clock(),
                       "revoked": None, "expired": None}
