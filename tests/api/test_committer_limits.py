"""Pending limits in a group commit's batch (services.pending), on SQLite and PostgreSQL.

A batch locks and counts all its accounts' limits at once (one statement each) before its
submissions run, every submission is still judged in arrival order against the ones
before it (its own account's limit and its ancestors'), a submission refused for another
reason does not count, a single submission checks the same rule with the same message,
and the committer keeps one connection from batch to batch, giving it back after a
batch whose transaction failed.
"""
from __future__ import annotations

import concurrent.futures
import functools
import threading

import pytest
import sqlalchemy as sa

HOLD = {"model": "hold", "slices": 1, "seconds": 1}


@pytest.fixture
def limited(seeded):
    """The seeded tree, with uni-a limited to 5 pending (vision keeps its own 3)."""
    from scheduler.services import accounts
    from scheduler.store import session_scope

    with session_scope(seeded.engine) as s:
        accounts.set_account(s, "uni-a", max_pending=5)
    return seeded


def _committer(seeded):
    from fastapi import HTTPException

    from scheduler.services.committer import Committer
    from scheduler.services.errors import domain_classes
    from scheduler.services.jobs import write_arrays

    return Committer(seeded.engine, flush=write_arrays, refusals=(*domain_classes(), HTTPException))


def _piece(seeded, token, **body):
    """A submission as the route queues it: its work and the batch's preparation."""
    from scheduler.api.routes_jobs import _prepare_batch, _submit
    from scheduler.api.schemas import SubmitRequest

    raw, at = seeded.tokens[token], seeded.clock()
    request = SubmitRequest(**{**HOLD, **body})
    work = functools.partial(_submit, token=raw, body=request, at=at, root=None)
    return work, (_prepare_batch, (raw, at, request.account))


def _held_batch(committer, pieces, savepoint=False):
    """Run ``pieces`` as one batch (a first piece holds the thread until all are queued)."""
    gate = threading.Event()
    first = committer.submit(lambda s: gate.wait(10))
    futures = [committer.submit(work, savepoint=savepoint, prepare=prepare) for work, prepare in pieces]
    gate.set()
    first.result(10)
    concurrent.futures.wait(futures, timeout=10)
    return futures


def _statements(engine):
    seen: list[str] = []

    def listener(conn, cursor, statement, *args):
        seen.append(" ".join(statement.split()).lower())

    return seen, listener


def _pending(engine) -> int:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM job WHERE state = 'PENDING'")).scalar_one()


def test_a_batch_locks_and_counts_its_limits_once_and_judges_each_in_order(limited):
    seen, listener = _statements(limited.engine)
    committer = _committer(limited)
    nlp = {"account": "uni-a/nlp"}
    pieces = [_piece(limited, "a_vision"), _piece(limited, "a_vision"), _piece(limited, "a", count=2, **nlp),
              _piece(limited, "a_vision"),  # vision's 3rd, uni-a's 5th: both limits reached
              _piece(limited, "a", **nlp),  # uni-a's 6th: over the institution's limit
              _piece(limited, "a_vision"),  # vision's 4th: over its own
              _piece(limited, "b")]
    sa.event.listen(limited.engine, "before_cursor_execute", listener)
    try:
        futures = _held_batch(committer, pieces)
    finally:
        sa.event.remove(limited.engine, "before_cursor_execute", listener)
    outcomes = [f.exception(10) for f in futures]
    assert [o is None for o in outcomes] == [True, True, True, True, False, False, True]
    assert str(outcomes[4]) == ("account uni-a/nlp is at uni-a's limit of 5 pending jobs (5 waiting); "
                                "wait for some to start or cancel some")
    assert str(outcomes[5]) == ("account uni-a/vision is at its limit of 3 pending jobs (3 waiting); "
                                "wait for some to start or cancel some")
    assert committer.failed_batches == 0 and _pending(limited.engine) == 6
    locks = [q for q in seen if q.startswith("select") and q.endswith("for update")]
    counts = [q for q in seen if q.startswith("select job.account_id, count(*)")]
    postgres = limited.engine.dialect.name == "postgresql"
    assert len(locks) == (1 if postgres else 0)  # uni-a, vision and nlp together (uni-b has no limit)
    assert len(counts) == 1


def test_a_refused_submission_in_a_prepared_batch_counts_nothing(limited):
    """Bad tokens, unknown and invisible accounts are prepared past, then refused by their
    own piece as before; the limit sees only what was accepted."""
    committer = _committer(limited)
    pieces = [_piece(limited, "revoked", account="uni-a/vision"), _piece(limited, "a", account="uni-x"),
              _piece(limited, "b", account="uni-a/vision"), _piece(limited, "a_vision", count=4),
              _piece(limited, "a_vision", count=3)]
    futures = _held_batch(committer, pieces)
    outcomes = [f.exception(10) for f in futures]
    assert [getattr(o, "status_code", type(o).__name__ if o else None) for o in outcomes] == [
        401, "NotFound", "NotFound", "DomainError", None]
    assert "4 more jobs would put account uni-a/vision over its limit of 3" in str(outcomes[3])
    assert _pending(limited.engine) == 3


@pytest.mark.parametrize("kind", ["submit_array", "plan_array"])
def test_one_transaction_of_single_submissions_counts_each(limited, kind):
    """The rule outside a batch: several submissions in one transaction see each other,
    written at once (submit_array) or planned and then written (the committer's way)."""
    from scheduler.services import jobs
    from scheduler.services.errors import DomainError
    from scheduler.store import session_scope

    args = {"account": "uni-a/vision", "model": "hold", "framework": None, "mode": "train", "slices": 1,
            "spec": {"seconds": 1}, "at": limited.clock()}

    def submit(s, n: int) -> None:
        if kind == "submit_array":
            for _ in range(n):
                jobs.submit_array(s, count=1, **args)
        else:
            jobs.write_arrays(s, [jobs.plan_array(s, count=1, **args) for _ in range(n)])

    with (pytest.raises(DomainError, match="at its limit of 3 pending jobs \\(3 waiting\\)"),
          session_scope(limited.engine) as s):
        submit(s, 4)
    assert _pending(limited.engine) == 0  # refused: the transaction wrote nothing
    with session_scope(limited.engine) as s:
        submit(s, 3)
    assert _pending(limited.engine) == 3


def test_the_committer_keeps_its_connection_and_gives_it_back_after_a_failed_batch(limited):
    checkouts: list[int] = []
    sa.event.listen(limited.engine, "checkout", lambda *a: checkouts.append(1))
    committer = _committer(limited)

    def broken(s):  # a database error, no savepoint: the batch fails and each piece runs alone
        s.connection().exec_driver_sql("INSERT INTO job (no_such_column) VALUES (1)")

    for _ in range(3):
        assert all(f.exception(10) is None for f in _held_batch(committer, [_piece(limited, "b")]))
    assert len(checkouts) == 1  # three batches (and their gates) on one connection
    futures = _held_batch(committer, [_piece(limited, "b"), (broken, None), _piece(limited, "a_vision")])
    assert [f.exception(10) is None for f in futures] == [True, False, True]
    assert committer.failed_batches == 1
    after_failure = len(checkouts)
    assert all(f.exception(10) is None for f in _held_batch(committer, [_piece(limited, "b")]))
    assert len(checkouts) == after_failure + 1  # a fresh checkout (pinged by the pool) after the failure
    assert _pending(limited.engine) == 3 + 2 + 1


def test_a_batch_is_answered_when_the_committer_cannot_connect(limited):
    """No connection to hold (the database is away for a moment): the batch runs on the
    engine as before and every caller gets its answer; the thread lives on."""
    committer = _committer(limited)
    connect, failures = limited.engine.connect, []

    def flaky():
        if not failures:
            failures.append(1)
            raise sa.exc.OperationalError("connect", {}, Exception("the server is away"))
        return connect()

    limited.engine.connect = flaky
    try:
        futures = _held_batch(committer, [_piece(limited, "b"), _piece(limited, "a_vision")])
    finally:
        del limited.engine.connect
    assert failures == [1] and [f.exception(10) for f in futures] == [None, None]
    assert committer.submit(_piece(limited, "b")[0]).result(10)["id"]
    assert _pending(limited.engine) == 3
