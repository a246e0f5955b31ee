"""`share --explain`: each account's standing in words, from share_rows' own figures."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scheduler.services import accounts, capacity, share
from scheduler.services.usage import add_usage
from scheduler.store import session_scope

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def row(account="x", parent=None, *, shares=0.5, usage=0.0, effective=None, factor=1.0, guaranteed=0,
        entitled=0.0, allocated=0, pending=0):
    return {"account": account, "parent": parent, "weight": 1.0, "norm_shares": shares, "raw_usage": usage * 1000,
            "norm_usage": usage, "effective_usage": usage if effective is None else effective,
            "fairshare_factor": factor, "guaranteed_slices": guaranteed, "max_slices": None,
            "entitled_slices": entitled, "allocated_slices": allocated, "pending_jobs": pending}


CASES = {
    "idle, never used": (
        row(), {},
        "no recorded usage: your factor is 1, the highest; you have no running or waiting jobs, so you are owed "
        "nothing now (your share goes to the others)"),
    "over its share, below its guarantee": (
        row(usage=1.0, shares=1 / 3, factor=0.125, guaranteed=4, entitled=4, allocated=1, pending=2), {},
        "your usage over the last half-life is 3.0x your share; you are below your guarantee (1 of 4 slices): "
        "you go first"),
    "under its share, owed more": (
        row(usage=0.1, shares=0.4, factor=0.84, entitled=2.67, allocated=1, pending=1), {},
        "your usage over the last half-life is 0.25x your share; you are owed 1.67 slices more: you go before "
        "accounts at or over their entitlement, the highest factor first"),
    "exactly its share, holding what it is owed": (
        row(usage=0.5, shares=0.5, factor=0.5, entitled=4, allocated=4, pending=3), {},
        "your usage over the last half-life matches your share; you hold what you are owed: your waiting jobs "
        "take slices that others leave idle, by factor"),
    "borrowing, reclaim to the guarantee": (
        row(usage=0.6, shares=0.5, factor=0.44, entitled=2, allocated=6), {},
        "your usage over the last half-life is 1.2x your share; you hold 4 slices more than you are owed: you "
        "are borrowing idle slices, which an account below its guarantee may take back"),
    "borrowing, no preemption": (
        row(usage=0.6, shares=0.5, factor=0.44, entitled=2, allocated=6), {"reclaim": None},
        "your usage over the last half-life is 1.2x your share; you hold 4 slices more than you are owed: you "
        "are borrowing idle slices"),
    "fair tree compares plain usage": (
        row(usage=0.9, effective=0.2, shares=0.3, factor=0.5, entitled=1, allocated=1), {"algorithm": "fair-tree"},
        "your usage over the last half-life is 3.0x your share; you hold what you are owed"),
    "used a great deal": (
        row(usage=0.99, shares=0.01, factor=0.0, entitled=1, allocated=1), {},
        "your usage over the last half-life is 99x your share; you hold what you are owed"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_cause_in_words(name):
    r, options, cause = CASES[name]
    (got,) = share.explain([r], **options)
    assert got["cause"] == cause
    assert tuple(got) == share.EXPLAIN_KEYS
    assert (got["owed_slices"], got["got_slices"]) == (r["entitled_slices"], r["allocated_slices"])


def test_siblings_are_ranked_by_factor_and_ties_named():
    rows = [row("u", shares=1.0, factor=0.6, entitled=8, allocated=8),
            row("u/a", "u", factor=0.9), row("u/b", "u", factor=0.3), row("u/c", "u", factor=0.9)]
    causes = {r["account"]: r["cause"].split("; ")[-1] for r in share.explain(rows)}
    assert causes == {"u": "you hold what you are owed", "u/a": "by factor 1st of 3 under u, level with u/c",
                      "u/b": "by factor 3rd of 3 under u", "u/c": "by factor 1st of 3 under u, level with u/a"}


def test_explain_rows_are_share_rows_figures(db_engine):
    with session_scope(db_engine) as s:
        capacity.set_node(s, node="n1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=NOW)
        accounts.add_account(s, "a", weight=2)
        accounts.add_account(s, "b", weight=1)
        add_usage(s, [(accounts.get_account(s, "b").id, 5000.0, NOW)])
    with session_scope(db_engine) as s:
        figures = {r["account"]: r for r in share.share_rows(s, NOW)}
        explained = {r["account"]: r for r in share.explain_rows(s, NOW)}
        mine = share.explain_rows(s, NOW, under="b")
    assert [r["account"] for r in mine] == ["b"]
    for name, r in explained.items():
        f = figures[name]
        assert (r["owed_slices"], r["got_slices"], r["fairshare_factor"]) == (
            f["entitled_slices"], f["allocated_slices"], f["fairshare_factor"])
    assert explained["b"]["usage_to_share"] == pytest.approx(3.0)
    assert explained["b"]["cause"].startswith("your usage over the last half-life is 3.0x your share")
