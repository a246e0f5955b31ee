"""services.report on a constructed history (report_history), on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest
from report_history import (
    CAPACITY_SLICE_HOURS,
    EXPECTED,
    JAIN,
    UNTIL,
    UTILISATION,
    T,
    at,
    build,
)

from scheduler.services import report as reports
from scheduler.services.errors import Invalid, NotFound
from scheduler.store import session_scope

FIELDS = ("slice_hours", "held_slice_hours", "owed_slice_hours", "waiting_hours", "starved_hours", "jobs_succeeded",
          "jobs_failed", "jobs_cancelled", "jobs_timeout", "preemptions", "wait_p50_s", "wait_p95_s")


@pytest.fixture
def history(db_engine):
    build(db_engine)
    return db_engine


def run(engine, **kw):
    with session_scope(engine) as s:
        return reports.report(s, **{"since": T, "until": UNTIL, **kw})


def test_exact_figures_per_account_and_for_the_cluster(history):
    got = run(history)
    rows = {r["account"]: r for r in got["accounts"]}
    assert list(rows) == ["north", "north/cv", "north/nlp", "south"]
    for name, want in EXPECTED.items():
        assert tuple(rows[name][k] for k in FIELDS) == pytest.approx(want), name
        assert tuple(rows[name]) == reports.REPORT_KEYS
    assert rows["north"]["got_share"] == pytest.approx(9.5 / 16)
    assert rows["south"]["owed_share"] == pytest.approx(4 / 16)
    assert rows["north/cv"]["parent"] == "north"
    assert got["capacity_slices"] == 4 and got["capacity_slice_hours"] == CAPACITY_SLICE_HOURS
    assert got["utilisation"] == pytest.approx(UTILISATION)
    assert got["jain_index"] == pytest.approx(JAIN)
    assert got["timeline"] == []


def test_a_subtree_and_a_shorter_period(history):
    got = run(history, under="north/nlp", since=at(2), until=at(3))
    assert [r["account"] for r in got["accounts"]] == ["north/nlp"]
    row = got["accounts"][0]
    # [2,3): owed 2, held 2 over [2.5,3), waiting over [2,2.5) and starved then; j3 timed out at 3 (excluded)
    assert (row["owed_slice_hours"], row["held_slice_hours"], row["starved_hours"], row["jobs_timeout"]) == \
        pytest.approx((2, 1, 0.5, 0))
    assert got["capacity_slice_hours"] == 4


def test_timeline_buckets_are_limited_to_the_subtree(history):
    got = run(history, under="south", buckets=4)
    assert [b["owed"] for b in got["timeline"]] == [{}, {"south": 1.0}, {"south": 1.0}, {"south": 2.0}]
    assert [b["held"] for b in got["timeline"]] == [{}, {}, {"south": 2.0}, {"south": 1.0}]
    assert got["timeline"][0]["start"] == T.isoformat()


def test_visibility_and_unknown_accounts(history):
    with pytest.raises(NotFound, match="unknown account south"):
        run(history, under="south", visible=frozenset({"north", "north/cv", "north/nlp"}))
    with pytest.raises(NotFound, match="unknown account nowhere"):
        run(history, under="nowhere")
    with pytest.raises(Invalid, match="must end after it starts"):
        run(history, since=UNTIL, until=T)


@pytest.mark.parametrize("since, until, message", [
    ("2026-13-01", None, "since must be a date"),
    ("yesterday", None, "since must be a date"),
    (None, "2026-11-02T25:00", "until must be a date"),
    ("2026-11-10", "2026-11-01", "the period must end after it starts"),
    ("2026-11-02", "2026-11-02", "the period must end after it starts"),
    ("2027-01-01", None, "the period must end after it starts .*which is now"),
    ("1969-12-31", None, "since must be 1970-01-01 or later"),
])
def test_bad_dates_are_one_line_invalid(since, until, message):
    with pytest.raises(Invalid, match=message):
        reports.period(since, until, UNTIL)


def test_period_defaults_and_forms():
    now = UNTIL
    assert reports.period(None, None, now) == (None, now)  # load picks the start: default_since
    assert reports.period("2026-11-02", "2030-01-01", now) == (T, now)  # a future end is now
    assert reports.period("2026-11-02T01:00:00+01:00", "2026-11-02T02:00Z", now) == (T, at(2))


def test_a_young_servers_default_period_starts_at_its_first_record(db_engine):
    """Not 30 days of which most came before the server (utilisation 0.0%): the later of
    30 days before the end and the first record (here j1, submitted at -1 h)."""
    with session_scope(db_engine) as s:
        assert reports.default_since(s, UNTIL) == UNTIL - timedelta(days=30)  # nothing recorded yet
    build(db_engine)
    with session_scope(db_engine) as s:
        got = reports.report(s, since=None, until=UNTIL)
        assert got["since"] == at(-1).isoformat()
        assert got["capacity_slice_hours"] == pytest.approx(20.0)  # 5 hours of 4 slices, not 30 days
        assert got["utilisation"] == pytest.approx((12.5 + 2.0) / 20.0)  # with cv's charge at -0.5 h
        later = UNTIL + timedelta(days=40)  # an old server: 30 days, as before
        assert reports.default_since(s, later) == later - timedelta(days=30)
