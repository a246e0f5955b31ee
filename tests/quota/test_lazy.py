"""quota.lazy.Lazy: computed once, on the first read, and equal to the dict it stands for."""
from quota.lazy import Lazy, resolved


def test_lazy_computes_once_on_first_read_and_equals_its_dict():
    calls = []

    def fn():
        calls.append(1)
        return {"a": 1.0, "b": 2.0}

    m = Lazy(fn)
    assert calls == []  # nothing computed until read
    assert m["a"] == 1.0 and m.get("c", 3.0) == 3.0 and "b" in m and len(m) == 2
    assert m == {"a": 1.0, "b": 2.0} and {"a": 1.0, "b": 2.0} == m and m != {"a": 1.0}
    assert sorted(m) == ["a", "b"] and resolved(m) is m.value
    assert calls == [1]


def test_resolved_passes_a_plain_mapping_through():
    d = {"x": 1}
    assert resolved(d) is d
