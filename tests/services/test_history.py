"""services.history: the job history read as attempts, as a table (SQLite and PostgreSQL).

Every job's life is written by the functions the server uses (services.jobs.submit_array
and cancel, apply.admit_many, requeue and finish; a timeout as the loop's end_attempt
writes it), at fixed times in seconds from T0."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.loop import apply
from scheduler.services import accounts, capacity, history, jobs, validate
from scheduler.services.errors import Invalid
from scheduler.store import Job, JobState, session_scope, transition

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
S, F, C, T, R, P = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.RUNNING,
                    JobState.PENDING)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


# name: (account, slices, submitted, moves). A move is (what, when); "finish" also
# records Ray's own start 2 s after the admission (a "started" event, which moves nothing).
LIVES = {
    "finished": ("north", 2, 0, [("admit", 10), ("finish", 110)]),
    "preempted, requeued, finished": ("south", 4, 0, [("admit", 10), ("preempted", 40), ("admit", 50),
                                                      ("requeued", 60), ("admit", 70), ("finish", 100)]),
    "still running": ("north", 1, 5, [("admit", 30)]),
    "preempted, waiting again": ("south", 1, 0, [("admit", 10), ("preempted", 20)]),
    "cancelled while waiting": ("north", 1, 0, [("cancel", 30)]),
    "never started": ("south", 3, 100, []),
    "failed": ("north", 1, 0, [("admit", 10), ("fail", 15)]),
    "timed out": ("south", 2, 0, [("admit", 10), ("timeout", 70)]),
    "cancelled while running": ("north", 1, 0, [("admit", 10), ("cancel", 50)]),
    "preempted, then cancelled waiting": ("south", 1, 0, [("admit", 10), ("preempted", 20), ("cancel", 25)]),
    "admitted as it arrived": ("north", 1, 0, [("admit", 0), ("finish", 5)]),
}

NOW = 1000
# name: (state, attempts as (start, end, how), ended, preemptions, waiting(NOW)), read whole at NOW
WHOLE = {
    "finished": (S, [(10, 110, "finished")], 110, 0, [(0, 10)]),
    "preempted, requeued, finished": (S, [(10, 40, "preempted"), (50, 60, "requeued"), (70, 100, "finished")],
                                      100, 1, [(0, 10), (40, 50), (60, 70)]),
    "still running": (R, [(30, NOW, None)], None, 0, [(5, 30)]),
    "preempted, waiting again": (P, [(10, 20, "preempted")], None, 1, [(0, 10), (20, NOW)]),
    "cancelled while waiting": (C, [], 30, 0, [(0, 30)]),
    "never started": (P, [], None, 0, [(100, NOW)]),
    "failed": (F, [(10, 15, "failed")], 15, 0, [(0, 10)]),
    "timed out": (T, [(10, 70, "timeout")], 70, 0, [(0, 10)]),
    "cancelled while running": (C, [(10, 50, "cancelled")], 50, 0, [(0, 10)]),
    "preempted, then cancelled waiting": (C, [(10, 20, "preempted")], 25, 1, [(0, 10), (20, 25)]),
    "admitted as it arrived": (S, [(0, 5, "finished")], 5, 0, []),
}

# name: (since, until, now, {job read: attempts}): a job is read iff submitted before
# until and not finished before since; an attempt not ended before until is open, to
# min(now, until)
WINDOWS = {
    "until cuts attempts open": (None, 45, NOW, {
        "finished": [(10, 45, None)],
        "preempted, requeued, finished": [(10, 40, "preempted")],
        "still running": [(30, 45, None)],
        "preempted, waiting again": [(10, 20, "preempted")],
        "cancelled while waiting": [],
        "failed": [(10, 15, "failed")],
        "timed out": [(10, 45, None)],
        "cancelled while running": [(10, 45, None)],
        "preempted, then cancelled waiting": [(10, 20, "preempted")],
        "admitted as it arrived": [(0, 5, "finished")],
    }),
    "since drops jobs finished before it; now ends what runs": (60, 200, 150, {
        "finished": [(10, 110, "finished")],
        "preempted, requeued, finished": [(10, 40, "preempted"), (50, 60, "requeued"), (70, 100, "finished")],
        "still running": [(30, 150, None)],
        "preempted, waiting again": [(10, 20, "preempted")],
        "never started": [],
        "timed out": [(10, 70, "timeout")],
    }),
}


def _build(engine) -> dict[int, str]:
    with session_scope(engine) as s:
        capacity.set_node(s, node="gpu-1", gpus=4, slices_per_gpu=4, gpu_type="T4", at=T0)
        for name in ("north", "south"):
            accounts.add_account(s, name, weight=1)
    names = {}
    for name, (account, slices, submitted, moves) in LIVES.items():
        with session_scope(engine) as s:
            [jid] = jobs.submit_array(s, count=1, account=account, model="hold", framework=None, mode="train",
                                      slices=slices, spec={"seconds": 1}, at=at(submitted))
        names[jid] = name
        admitted = None
        for what, when in moves:
            with session_scope(engine) as s:
                job = s.get(Job, jid)
                if what == "admit":
                    admitted = when
                    apply.admit_many(s, [(job, "gpu-1", [(0, slices)])], at=at(when))
                elif what in ("preempted", "requeued"):
                    apply.requeue(s, job, at=at(when), event=what, message="test")
                elif what in ("finish", "fail"):
                    result = {"task_started_at": at(admitted + 2).timestamp()}
                    apply.finish(s, job, ok=what == "finish", at=at(when), result=result,
                                 error=None if what == "finish" else "boom")
                elif what == "timeout":
                    transition(s, job, T, at=at(when), event="timeout", message="ran past its limit", refresh=False)
                else:
                    jobs.cancel(s, jid, None, at(when))
    return names


def _secs(t: datetime | None) -> float | None:
    return None if t is None else (t - T0).total_seconds()


def _attempts(record) -> list[tuple]:
    return [(_secs(a.start), _secs(a.end), a.how) for a in record.attempts]


@pytest.fixture
def built(db_engine):
    return db_engine, _build(db_engine)


def test_every_life_reads_as_its_attempts(built):
    engine, names = built
    with session_scope(engine) as s:
        records = history.read(s, now=at(NOW))
    assert [r.id for r in records] == sorted(names)  # every job, in id order
    got = {names[r.id]: (r.state, _attempts(r), _secs(r.ended), r.preemptions,
                         [(_secs(a), _secs(b)) for a, b in r.waiting(at(NOW))]) for r in records}
    assert got == WHOLE
    by_name = {names[r.id]: r for r in records}
    for name, (account, slices, submitted, _) in LIVES.items():
        r = by_name[name]
        assert (r.account, r.slices, r.submitted_at) == (account, slices, at(submitted))
        assert all(a.open == (a.how is None) for a in r.attempts)


@pytest.mark.parametrize("window", list(WINDOWS))
def test_a_window_reads_what_it_overlaps(built, window):
    engine, names = built
    since, until, now, want = WINDOWS[window]
    with session_scope(engine) as s:
        records = history.read(s, now=at(now), since=None if since is None else at(since), until=at(until))
    assert {names[r.id]: _attempts(r) for r in records} == want


def test_records_are_frozen(built):
    engine, _ = built
    with session_scope(engine) as s:
        record = history.read(s, now=at(NOW))[0]
    with pytest.raises(AttributeError):
        record.slices = 9
    with pytest.raises(AttributeError):
        record.attempts[0].end = at(0)


# The window's bounds as `fairgpu report --since/--until` give them (validate.parse_when).
@pytest.mark.parametrize("text, want", [
    ("2026-11-02", T0 - timedelta(hours=9)),
    ("2026-11-02T09:00", T0),
    ("2026-11-02 09:00:00", T0),
    ("2026-11-02T09:00:00.5Z", T0 + timedelta(seconds=0.5)),
    ("2026-11-02T10:00:00+01:00", T0),
    ("2026-11-02T07:00-02:00", T0),
    ("1970-01-01", validate.EPOCH),
])
def test_parse_when_forms(text, want):
    assert validate.parse_when(text, "since") == want


@pytest.mark.parametrize("text, message", [
    ("2026-W45-1", "since must be a date (YYYY-MM-DD) or an ISO 8601 time (got '2026-W45-1')"),
    ("20261102", "since must be a date"),
    ("2026-11-02T09", "since must be a date"),
    ("2026-11-02T0900", "since must be a date"),
    ("2026-11-02T09:00+0100", "since must be a date"),
    (" 2026-11-02", "since must be a date"),
    ("2026-11-02Z", "since must be a date"),
    ("2026-02-30", "since must be a date"),
    ("2026-11-02T24:00", "since must be a date"),
    ("9999-12-31T23:00-01:00", "since must be a date"),
    ("", "since must be a date"),
    (None, "since must be a date"),
    ("1969-12-31T23:59:59Z", "since must be 1970-01-01 or later"),
])
def test_parse_when_refuses_other_forms(text, message):
    with pytest.raises(Invalid, match=re.escape(message)):
        validate.parse_when(text, "since")
