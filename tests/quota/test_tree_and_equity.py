"""Account-tree validation and the equity measures."""
import re

import pytest

import quota as q
from builders import tree
from quota import limits

WEIGHT = re.escape(f"account a: weight must be {limits.WEIGHT.describe()}")


@pytest.mark.parametrize("specs, capacity, message", [
    ([q.AccountSpec("a", 0)], None, WEIGHT),
    ([q.AccountSpec("a", -1)], None, WEIGHT),
    ([q.AccountSpec("a", float("nan"))], None, WEIGHT),
    ([q.AccountSpec("a", float("inf"))], None, WEIGHT),
    ([q.AccountSpec("a", 1e300)], None, WEIGHT),
    ([q.AccountSpec("a", 1e-300)], None, WEIGHT),
    ([q.AccountSpec("a", 1, guaranteed=-1)], None, "guaranteed must be an integer 0 to"),
    ([q.AccountSpec("a", 1, cap=2**31)], None, "max must be an integer 0 to"),
    ([q.AccountSpec("a", 1, max_pending=-1)], None, "max_pending must be an integer 0 to"),
    ([q.AccountSpec("a", 1, guaranteed=3, cap=2)], None, "below its guarantee"),
    ([q.AccountSpec("a", 1), q.AccountSpec("a", 2)], None, "already exists"),
    ([q.AccountSpec("a", 1, parent="ghost")], None, "unknown parent ghost"),
    ([q.AccountSpec("a", 1, guaranteed=5), q.AccountSpec("b", 1, guaranteed=5)], 8, "over the capacity of 8"),
    ([q.AccountSpec("p", 1, guaranteed=2), q.AccountSpec("c", 1, parent="p", guaranteed=3)], None,
     "over its own guarantee of 2"),
    ([q.AccountSpec("x", 1, parent="y"), q.AccountSpec("y", 1, parent="x")], None, "form a cycle"),
])
def test_bad_trees_are_refused_with_one_line(specs, capacity, message):
    with pytest.raises(q.QuotaError, match=message) as err:
        q.AccountTree.build(specs, capacity)
    assert "\n" not in str(err.value)


def test_tree_navigation_is_ordered_and_complete():
    t = tree(("b", 1), ("a", 1), ("a/y", 1, {"parent": "a"}), ("a/x", 1, {"parent": "a"}))
    assert t.order == ("a", "a/x", "a/y", "b")
    assert t.leaves() == ["a/x", "a/y", "b"]
    assert t.ancestors("a/x") == ["a/x", "a"]
    with pytest.raises(q.QuotaError, match="sub-accounts"):
        t.without("a")
    assert "a/x" not in t.without("a/x")


def test_jain_index_bounds():
    assert q.jain_index([1, 1, 1]) == pytest.approx(1.0)
    assert q.jain_index([1, 0, 0, 0]) == pytest.approx(0.25)
    assert q.jain_of_shares({"a": 2, "b": 4}, {"a": 2, "b": 4, "idle": 0}) == pytest.approx(1.0)
    assert q.jain_of_shares({"a": 4, "b": 2}, {"a": 2, "b": 4}) < 0.9


def test_share_deviation_and_gini():
    dev = q.share_deviation({"a": 3}, {"a": 2, "b": 2}, 4)
    assert dev == pytest.approx({"a": 0.25, "b": -0.5})
    assert q.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert q.gini([0, 0, 0, 1]) == pytest.approx(0.75)
    # usage exactly in proportion to shares is perfectly equal, whatever the weights
    assert q.usage_gini({"a": 1 / 6, "b": 2 / 6, "c": 3 / 6}, {"a": 1 / 6, "b": 2 / 6, "c": 3 / 6}) == pytest.approx(0)


def test_quota_never_imports_frameworks_or_io():
    import ast
    import pathlib

    banned = {"ray", "sqlmodel", "sqlalchemy", "prometheus_client", "torch", "tensorflow", "fastapi",
              "scheduler", "workloads", "time", "datetime"}
    root = pathlib.Path(q.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"


def test_gini_stays_finite_where_its_sums_overflow():
    """2 * sum((i+1) x) can overflow while the sum itself does not (found by test_total's
    properties): the Gini is then computed on the values scaled, as it is for 1:2:3."""
    import sys

    big = sys.float_info.max / 6
    assert q.gini([big, 2 * big]) == pytest.approx(q.gini([1, 2]))  # sum finite, 2 * weighted not
    assert q.gini([big, 2 * big, 3 * big]) == pytest.approx(q.gini([1, 2, 3]))
