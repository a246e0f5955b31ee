"""Weighted water-filling: guarantees first, caps respected, work-conserving."""
import pytest

import quota as q
from builders import tree


def test_weights_split_capacity_when_everyone_wants_it_all():
    e = q.entitlements(tree(("a", 1), ("b", 2), ("c", 3)), 12, {"a": 100, "b": 100, "c": 100})
    assert e == pytest.approx({"a": 2, "b": 4, "c": 6})


def test_unused_share_is_redistributed_by_weight():
    e = q.entitlements(tree(("a", 1), ("b", 1), ("c", 2)), 12, {"a": 1, "b": 100, "c": 100})
    assert e == pytest.approx({"a": 1, "b": 11 / 3, "c": 22 / 3})


def test_no_demand_no_entitlement():
    e = q.entitlements(tree(("a", 1), ("b", 1)), 8, {"a": 3})
    assert e == pytest.approx({"a": 3, "b": 0})


def test_guarantee_is_a_floor_not_an_addition():
    e = q.entitlements(tree(("a", 1, {"guaranteed": 6}), ("b", 1)), 8, {"a": 100, "b": 100})
    assert e == pytest.approx({"a": 6, "b": 2})
    e = q.entitlements(tree(("a", 1, {"guaranteed": 2}), ("b", 1)), 8, {"a": 100, "b": 100})
    assert e == pytest.approx({"a": 4, "b": 4})


def test_cap_limits_and_leftover_moves_on():
    e = q.entitlements(tree(("a", 5, {"cap": 2}), ("b", 1)), 8, {"a": 100, "b": 100})
    assert e == pytest.approx({"a": 2, "b": 6})


def test_hierarchy_splits_a_parents_entitlement():
    t = tree(("i1", 1), ("i2", 1), ("i1/x", 1, {"parent": "i1"}), ("i1/y", 3, {"parent": "i1"}))
    e = q.entitlements(t, 8, {"i1/x": 10, "i1/y": 10, "i2": 10})
    assert e == pytest.approx({"i1": 4, "i2": 4, "i1/x": 1, "i1/y": 3})


def test_shrunk_capacity_scales_guarantees():
    e = q.entitlements(tree(("a", 1, {"guaranteed": 4}), ("b", 1, {"guaranteed": 4})), 4, {"a": 9, "b": 9})
    assert e == pytest.approx({"a": 2, "b": 2})


@pytest.mark.parametrize("cap", [0, 1, 5, 7, 40])
def test_total_is_min_of_capacity_and_demand(cap):
    t = tree(("a", 1, {"guaranteed": 1}), ("b", 2, {"cap": 3}), ("c", 4))
    demand = {"a": 2, "b": 9, "c": 5}
    e = q.entitlements(t, cap, demand)
    assert sum(e.values()) == pytest.approx(min(cap, 2 + 3 + 5))
