"""quota.period: entitlement and holdings integrated over a period, exact numbers by hand."""
from __future__ import annotations

import itertools
import random

import pytest

import quota as q
from quota.period import HELD, WAITING, Span, integrate

H = 3600.0


def tree(*specs):
    return q.AccountTree.build(q.AccountSpec(name, weight, **opts) for name, weight, opts in specs)


TWO = tree(("a", 1, {}), ("b", 3, {}))
EVEN = tree(("a", 1, {}), ("b", 1, {}))

# name: (tree, capacity, spans, since, until, {account: (held_sh, owed_sh, waiting_h, starved_h)}, jain)
CASES = {
    "weights 1:3 on 4 slices, both hold 2 for 1 h": (
        TWO, 4, [Span("a", 0, H, 2), Span("b", 0, H, 2), Span("a", 0, H, 2, WAITING), Span("b", 0, H, 2, WAITING)],
        0, H, {"a": (2, 1, 1, 0), "b": (2, 3, 1, 0)}, (2 / 1 + 2 / 3) ** 2 / (2 * (4 + 4 / 9))),
    "weights 1:3, both only waiting for 1 h: owed 1 and 3, both starved": (
        TWO, 4, [Span("a", 0, H, 4, WAITING), Span("b", 0, H, 4, WAITING)],
        0, H, {"a": (0, 1, 1, 1), "b": (0, 3, 1, 1)}, 1.0),
    "one holds everything, the other waits: 2 and 2 owed": (
        EVEN, 4, [Span("a", 0, H, 4), Span("b", 0, H, 4, WAITING)],
        0, H, {"a": (4, 2, 0, 0), "b": (0, 2, 1, 1)}, 0.5),
    "alone for an hour, then contended for an hour": (
        EVEN, 4, [Span("a", 0, 2 * H, 4), Span("b", H, 2 * H, 4, WAITING)],
        0, 2 * H, {"a": (8, 6, 0, 0), "b": (0, 2, 1, 1)}, 0.5),
    "a guarantee comes first": (
        tree(("a", 1, {"guaranteed": 3}), ("b", 1, {})), 4, [Span("a", 0, H, 4, WAITING), Span("b", 0, H, 4)],
        0, H, {"a": (0, 3, 1, 1), "b": (4, 1, 0, 0)}, 0.5),
    "a cap limits the demand": (
        tree(("a", 1, {"cap": 1}), ("b", 1, {})), 4, [Span("a", 0, H, 1), Span("a", 0, H, 3, WAITING),
                                                      Span("b", 0, H, 4)],
        0, H, {"a": (1, 1, 1, 0), "b": (4, 3, 0, 0)}, (1 + 4 / 3) ** 2 / (2 * (1 + 16 / 9))),
    "exactly half the entitlement is not starving": (
        EVEN, 4, [Span("a", 0, H, 1), Span("a", 0, H, 3, WAITING), Span("b", 0, H, 4)],
        0, H, {"a": (1, 2, 1, 0), "b": (4, 2, 0, 0)}, (0.5 + 2) ** 2 / (2 * (0.25 + 4))),
    "spans are clipped to the period": (
        EVEN, 4, [Span("a", -H, 2 * H, 2), Span("b", -5 * H, H / 2, 2, WAITING)],
        0, H, {"a": (2, 2, 0, 0), "b": (0, 1, 0.5, 0.5)}, 0.5),
    "nothing happens": (EVEN, 4, [], 0, H, {"a": (0, 0, 0, 0), "b": (0, 0, 0, 0)}, 1.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_period_figures(name):
    t, cap, spans, since, until, want, jain = CASES[name]
    got = integrate(t, cap, spans, since, until)
    for account, (held_sh, owed_sh, waiting_h, starved_h) in want.items():
        f = got.accounts[account]
        assert (f.held_slice_s / H, f.owed_slice_s / H, f.waiting_s / H, f.starved_s / H) == pytest.approx(
            (held_sh, owed_sh, waiting_h, starved_h)), account
    assert got.jain_index == pytest.approx(jain)
    assert got.capacity_slice_s == cap * (until - since)


def test_inner_accounts_get_their_subtree_and_siblings_split_by_weight():
    t = tree(("north", 3, {}), ("north/cv", 2, {"parent": "north"}), ("north/nlp", 1, {"parent": "north"}),
             ("south", 1, {}))
    spans = [Span("north/cv", 0, H, 8, WAITING), Span("north/nlp", 0, H, 8, WAITING), Span("south", 0, H, 8)]
    got = integrate(t, 8, spans, 0, H).accounts
    # north 6 (then 4 cv, 2 nlp), south 2; south holds all 8
    assert [got[n].owed_slice_s / H for n in ("north", "north/cv", "north/nlp", "south")] == pytest.approx(
        [6, 4, 2, 2])
    assert got["north"].held_slice_s == 0 and got["south"].held_slice_s == 8 * H
    assert got["north"].starved_s == H and got["south"].waiting_s == 0


def test_the_timeline_holds_mean_slices_per_bucket():
    got = integrate(EVEN, 4, [Span("a", 0, 2 * H, 4), Span("b", H, 1.5 * H, 4, WAITING)], 0, 2 * H, buckets=2)
    first, second = got.timeline
    assert (first.start, first.end, second.end) == (0, H, 2 * H)
    assert first.owed == {"a": 4} and first.held == {"a": 4}
    assert second.owed == pytest.approx({"a": 3, "b": 1}) and second.held == {"a": 4}
    assert integrate(EVEN, 4, [], 0, H).timeline == ()


@pytest.mark.parametrize("spans, since, until, message", [
    ([], 5, 5, "must end after it starts"),
    ([Span("nobody", 0, 1, 1)], 0, 1, "unknown account nobody"),
    ([Span("a", 0, 1, 0)], 0, 1, "invalid span"),
    ([Span("a", 2, 1, 1)], 0, 3, "invalid span"),
    ([Span("a", 0, 1, 1, "running")], 0, 1, "invalid span"),
])
def test_bad_input_is_refused(spans, since, until, message):
    with pytest.raises(q.QuotaError, match=message):
        integrate(EVEN, 4, spans, since, until)


def test_spans_belong_to_leaves():
    t = tree(("n", 1, {}), ("n/x", 1, {"parent": "n"}))
    with pytest.raises(q.QuotaError, match="sub-accounts"):
        integrate(t, 4, [Span("n", 0, 1, 1)], 0, 1)


def _reference(t, cap, spans, since, until):
    """The definition, step by step over every change point, re-reading every span (an oracle)."""
    points = sorted({since, until} | {max(since, min(until, x)) for s in spans for x in (s.start, s.end)})
    out = {n: [0.0, 0.0, 0.0, 0.0] for n in t.order}
    for a, b in itertools.pairwise(points):
        held = {n: 0 for n in t.order}
        waiting = {n: 0 for n in t.order}
        for s in spans:
            if s.start <= a < s.end:
                for n in t.ancestors(s.account):
                    (held if s.kind == HELD else waiting)[n] += s.slices
        demand = {n: float(held[n] + waiting[n]) for n in t.leaves() if held[n] + waiting[n]}
        ent = q.entitlements(t, cap, demand)
        for n in t.order:
            out[n][0] += held[n] * (b - a)
            out[n][1] += ent[n] * (b - a)
            if waiting[n]:
                out[n][2] += b - a
                out[n][3] += (b - a) if held[n] < ent[n] / 2 else 0.0
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_match_the_definition(seed):
    rng = random.Random(seed)
    t = tree(("x", 2, {"guaranteed": 2}), ("x/p", 1, {"parent": "x"}), ("x/q", 3, {"parent": "x", "cap": 3}),
             ("y", 1, {}), ("z", 1, {"cap": 4}))
    spans = []
    for _ in range(40):
        start = rng.randrange(-20, 100)
        spans.append(Span(rng.choice(["x/p", "x/q", "y", "z"]), start, start + rng.randrange(0, 30),
                          rng.randrange(1, 5), rng.choice([HELD, WAITING])))
    got = integrate(t, 8, spans, 0, 90, buckets=7)
    want = _reference(t, 8, spans, 0, 90)
    for n in t.order:
        f = got.accounts[n]
        assert [f.held_slice_s, f.owed_slice_s, f.waiting_s, f.starved_s] == pytest.approx(want[n]), n
    for n in t.order:  # the buckets hold the same slice-time, spread over the period
        assert sum(b.owed.get(n, 0.0) for b in got.timeline) * 90 / 7 == pytest.approx(want[n][1])
        assert sum(b.held.get(n, 0.0) for b in got.timeline) * 90 / 7 == pytest.approx(want[n][0])
