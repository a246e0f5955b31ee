"""Fair-share factors against a worked example computed by hand (docs/fair-share.md)."""
import math

import pytest

import quota as q
from builders import tree

# root -> A (40 shares) -> A1 (1), A2 (3); root -> B (60). Decayed usage: A1 20, A2 20, B 50.
TREE = tree(("A", 40), ("B", 60), ("A1", 1, {"parent": "A"}), ("A2", 3, {"parent": "A"}))
USAGE = {"A1": 20.0, "A2": 20.0, "B": 50.0}


def test_classic_worked_example():
    f = q.fair_share(TREE, USAGE, q.CLASSIC)
    assert f.norm_shares == pytest.approx({"A": 0.4, "B": 0.6, "A1": 0.1, "A2": 0.3})
    assert f.raw_usage == pytest.approx({"A": 40.0, "B": 50.0, "A1": 20.0, "A2": 20.0})
    assert f.norm_usage == pytest.approx({"A": 40 / 90, "B": 50 / 90, "A1": 20 / 90, "A2": 20 / 90})
    ue_a = 40 / 90
    ue_a1 = 20 / 90 + (ue_a - 20 / 90) * 1 / 4
    ue_a2 = 20 / 90 + (ue_a - 20 / 90) * 3 / 4
    assert f.effective_usage == pytest.approx({"A": ue_a, "B": 50 / 90, "A1": ue_a1, "A2": ue_a2})
    assert f.factor["A1"] == pytest.approx(2 ** (-ue_a1 / 0.1))
    assert f.factor["A2"] == pytest.approx(2 ** (-ue_a2 / 0.3))
    assert f.factor["B"] == pytest.approx(2 ** (-(50 / 90) / 0.6))
    assert round(f.factor["A1"], 4) == 0.1458 and round(f.factor["A2"], 4) == 0.4072


def test_classic_no_usage_is_one_and_usage_lowers_factor():
    assert set(q.fair_share(TREE, {}, q.CLASSIC).factor.values()) == {1.0}
    more = q.fair_share(TREE, {**USAGE, "A1": 200.0}, q.CLASSIC).factor
    assert more["A1"] < q.fair_share(TREE, USAGE, q.CLASSIC).factor["A1"]


def test_fair_tree_ranks_depth_first():
    f = q.fair_share(TREE, USAGE, q.FAIR_TREE)
    # Level FS: A = 0.4 / (40/90) = 0.9, B = 0.6 / (50/90) = 1.08; A2 = 0.75/0.5 = 1.5, A1 = 0.25/0.5 = 0.5
    assert f.level_fs["B"] == pytest.approx(1.08) and f.level_fs["A"] == pytest.approx(0.9)
    assert f.factor == pytest.approx({"B": 1.0, "A2": 2 / 3, "A1": 1 / 3, "A": 2 / 3})


def test_fair_tree_children_of_a_better_account_all_rank_higher():
    t = tree(("X", 1), ("Y", 1), ("X1", 1, {"parent": "X"}), ("X2", 1, {"parent": "X"}),
             ("Y1", 1, {"parent": "Y"}), ("Y2", 1, {"parent": "Y"}))
    f = q.fair_share(t, {"X1": 1.0, "X2": 1000.0, "Y1": 600.0, "Y2": 600.0}, q.FAIR_TREE).factor
    assert min(f["X1"], f["X2"]) > max(f["Y1"], f["Y2"])  # X used less overall


def test_fair_tree_ties_share_a_rank_and_no_usage_is_infinite():
    f = q.fair_share(tree(("a", 1), ("b", 1), ("c", 1)), {"c": 5.0}, q.FAIR_TREE)
    assert math.isinf(f.level_fs["a"]) and f.factor["a"] == f.factor["b"] == 1.0
    assert f.factor["c"] == pytest.approx(1 / 3)


def test_decay_halves_at_the_half_life():
    day = 86400.0
    u = q.decayed_usage([("a", 100.0, 0.0), ("a", 100.0, 7 * day), ("b", 8.0, 0.0)], now=7 * day,
                        half_life_s=7 * day)
    assert u == pytest.approx({"a": 150.0, "b": 4.0})
    assert q.decay_factor(-5.0) == 1.0
    with pytest.raises(ValueError):
        q.decay_factor(1.0, 0.0)


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="unknown fair-share algorithm"):
        q.fair_share(TREE, USAGE, "lottery")
