"""The attempt-limit settings (host_memory_per_slice, max_processes): validated and stored
normalised by the service, set through the API; a bad value is one line and writes nothing."""
from __future__ import annotations

import pytest

from quota import limits
from scheduler.services.errors import Invalid
from scheduler.services.settings import AttemptLimits, all_settings, policy_settings, set_setting, show
from scheduler.store import session_scope

from api_helpers import bearer

GOOD = [
    ("host_memory_per_slice", "8GiB", str(8 << 30), "8GiB"),
    ("host_memory_per_slice", "512MiB", str(512 << 20), "512MiB"),
    ("host_memory_per_slice", "2G", str(2 << 30), "2GiB"),
    ("host_memory_per_slice", "1.5GiB", str(3 << 29), "1536MiB"),
    ("host_memory_per_slice", "67108865", "67108865", "67108865"),  # plain bytes, just past the floor
    ("host_memory_per_slice", "64M", str(64 << 20), "64MiB"),
    ("host_memory_per_slice", "64TiB", str(64 << 40), "64TiB"),
    ("host_memory_per_slice", "node", "node", "node"),
    ("max_processes", "16", "16", "16"),
    ("max_processes", "1000000", "1000000", "1000000"),
]
SIZE = "must be a size such as 8GiB, 512MiB or 2G"
BAD = [
    ("host_memory_per_slice", "8GB", SIZE),
    ("host_memory_per_slice", "8 GiB", SIZE),
    ("host_memory_per_slice", "-1G", SIZE),
    ("host_memory_per_slice", "1e9", SIZE),
    ("host_memory_per_slice", "Node", SIZE),
    ("host_memory_per_slice", "nan", SIZE),
    ("host_memory_per_slice", "9" * 40, SIZE),
    ("host_memory_per_slice", "1.0000001K", "a whole number of bytes"),
    ("host_memory_per_slice", "67108863", "must be 64MiB to 64TiB (got 67108863)"),
    ("host_memory_per_slice", "65T", "must be 64MiB to 64TiB (got 65T)"),
    ("max_processes", "15", f"max_processes must be {limits.MAX_PROCESSES.describe()} (got 15)"),
    ("max_processes", "1000001", "(got 1000001)"),
    ("max_processes", "-5", "(got '-5')"),
    ("max_processes", "4k", "(got '4k')"),
    ("max_processes", "9" * 30, "max_processes must be"),
]


def test_defaults_are_the_nodes_share_and_4096(db_engine):
    with session_scope(db_engine) as s:
        assert (all_settings(s)["host_memory_per_slice"], all_settings(s)["max_processes"]) == ("node", "4096")
        assert policy_settings(s).attempt == AttemptLimits(host_memory_per_slice=None, max_processes=4096)


@pytest.mark.parametrize("key, value, stored, shown", GOOD, ids=[f"{k}={v}" for k, v, *_ in GOOD])
def test_good_values_are_stored_normalised(db_engine, key, value, stored, shown):
    with session_scope(db_engine) as s:
        assert set_setting(s, key, value) == stored
    with session_scope(db_engine) as s:
        assert all_settings(s)[key] == stored and show(key, stored) == shown
        attempt = policy_settings(s).attempt
    got = attempt.host_memory_per_slice if key == "host_memory_per_slice" else attempt.max_processes
    assert got == (None if stored == "node" else int(stored))


def test_bad_values_are_one_line_and_write_nothing(db_engine):
    with session_scope(db_engine) as s:
        set_setting(s, "host_memory_per_slice", "4GiB")
    for key, value, phrase in BAD:
        with pytest.raises((Invalid, limits.LimitError)) as err:
            with session_scope(db_engine) as s:
                set_setting(s, key, value)
        assert phrase in str(err.value) and "\n" not in str(err.value), (key, value, str(err.value))
        with session_scope(db_engine, readonly=True) as s:
            now = all_settings(s)
        assert (now["host_memory_per_slice"], now["max_processes"]) == (str(4 << 30), "4096")


def test_the_api_sets_them_and_refuses_bad_values_with_422(seeded, client):
    h = bearer(seeded.tokens["admin"])
    r = client.put("/v1/admin/settings/host_memory_per_slice", json={"value": "8GiB"}, headers=h)
    assert (r.status_code, r.json()) == (200, {"key": "host_memory_per_slice", "value": str(8 << 30)})
    r = client.put("/v1/admin/settings/max_processes", json={"value": "256"}, headers=h)
    assert (r.status_code, r.json()) == (200, {"key": "max_processes", "value": "256"})
    assert client.get("/v1/admin/settings/host_memory_per_slice", headers=h).json()["value"] == str(8 << 30)
    assert client.get("/v1/admin/settings", headers=h).json()["max_processes"] == "256"
    before = seeded.counts()
    for key, value in (("host_memory_per_slice", "lots"), ("host_memory_per_slice", "1K"), ("max_processes", "2")):
        r = client.put(f"/v1/admin/settings/{key}", json={"value": value}, headers=h)
        assert r.status_code == 422 and key in r.json()["detail"] and "\n" not in r.json()["detail"], r.text
    assert seeded.counts() == before
    assert client.get("/v1/admin/settings", headers=h).json()["host_memory_per_slice"] == str(8 << 30)
    r = client.put("/v1/admin/settings/max_processes", json={"value": "256"}, headers=bearer(seeded.tokens["a"]))
    assert r.status_code == 403
