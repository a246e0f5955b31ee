"""Account, capacity, settings and share services on both SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from quota import QuotaError, limits
from quota.limits import LimitError
from scheduler.services import accounts, capacity, settings, share
from scheduler.services.errors import DomainError
from scheduler.store import Job, JobState, session_scope, transition
from scheduler.store.transitions import submit_jobs

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def tree(db_engine):
    with session_scope(db_engine) as s:
        capacity.set_node(s, node="n1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=NOW)
        accounts.add_account(s, "a", weight=1, guaranteed=2)
        accounts.add_account(s, "b", weight=3)
        accounts.add_account(s, "a/x", weight=1, parent="a")
        accounts.add_account(s, "a/y", weight=1, parent="a")
    return db_engine


def test_tree_round_trips(tree):
    with session_scope(tree) as s:
        t = accounts.load_tree(s)
    assert t.order == ("a", "a/x", "a/y", "b")
    assert t.accounts["a"].guaranteed == 2 and t.accounts["a/x"].parent == "a"


def test_refusals_write_nothing(tree):
    for call, err in [
        (lambda s: accounts.add_account(s, "c", weight=1, guaranteed=7), QuotaError),
        (lambda s: accounts.set_account(s, "a/x", guaranteed=3), QuotaError),
        (lambda s: accounts.remove_account(s, "a"), DomainError),
        (lambda s: capacity.set_node(s, node="n1", gpus=0, slices_per_gpu=4, gpu_type="T4", at=NOW), DomainError),
        (lambda s: capacity.set_node(s, node="n1", gpus=2**31, slices_per_gpu=4, gpu_type="T4", at=NOW), LimitError),
        (lambda s: accounts.set_account(s, "b", weight=float("inf")), LimitError),
    ]:
        with pytest.raises(err):
            with session_scope(tree) as s:
                call(s)
    with session_scope(tree) as s:
        rows = accounts.list_accounts(s)
        assert capacity.total_slices(s) == 8
    assert [r["guaranteed_slices"] for r in rows] == [2, 0, 0, 0]


def test_account_with_jobs_cannot_be_removed_and_no_sub_accounts_under_it(tree):
    with session_scope(tree) as s:
        acct = accounts.get_account(s, "b")
        submit_jobs(s, count=1, account_id=acct.id, model="hold", framework=None, mode="train", slices=1,
                    spec={"seconds": 1}, at=NOW)
    with pytest.raises(DomainError, match="1 job"):
        with session_scope(tree) as s:
            accounts.remove_account(s, "b")
    with pytest.raises(DomainError, match="jobs of its own"):
        with session_scope(tree) as s:
            accounts.add_account(s, "b/sub", weight=1, parent="b")


def test_share_counts_running_and_pending_and_entitlement(tree):
    with session_scope(tree) as s:
        ids = {a: accounts.get_account(s, a).id for a in ("a/x", "b")}
        job_ids = submit_jobs(s, count=3, account_id=ids["a/x"], model="hold", framework=None, mode="train", slices=2,
                              spec={"seconds": 5}, at=NOW)
        job_ids += submit_jobs(s, count=2, account_id=ids["b"], model="hold", framework=None, mode="train", slices=4,
                               spec={"seconds": 5}, at=NOW)
        jobs = [s.get(Job, i) for i in job_ids]
    with session_scope(tree) as s:
        transition(s, jobs[0], JobState.RUNNING, at=NOW, node="n1", gpu=0, gpu_slices=[[0, 2]])
        transition(s, jobs[3], JobState.RUNNING, at=NOW, node="n1", gpu=1, gpu_slices=[[1, 4]])
    with session_scope(tree) as s:
        rows = {r["account"]: r for r in share.share_rows(s, NOW + timedelta(seconds=10))}
    assert rows["a/x"]["allocated_slices"] == 2 and rows["a/x"]["pending_jobs"] == 2
    assert rows["a"]["allocated_slices"] == 2 and rows["a"]["pending_jobs"] == 2
    assert rows["b"]["allocated_slices"] == 4 and rows["b"]["pending_jobs"] == 1
    # demand: a/x 6, b 8, capacity 8; a's guarantee 2 is a floor, weights 1:3 split the rest
    assert rows["a"]["entitled_slices"] == pytest.approx(2.0)
    assert rows["b"]["entitled_slices"] == pytest.approx(6.0)
    assert rows["a/y"]["entitled_slices"] == 0
    assert sum(r["entitled_slices"] for r in rows.values() if r["parent"] is None) == pytest.approx(8)


def test_settings_validate_and_feed_the_policy(tree):
    with session_scope(tree) as s:
        settings.set_setting(s, "half_life", "36h")
        settings.set_setting(s, "reclaim", "entitlement")
        with pytest.raises(DomainError):
            settings.set_setting(s, "algorithm", "random")
        with pytest.raises(DomainError, match="half_life must be"):
            settings.set_setting(s, "half_life", "1e9")
    with session_scope(tree) as s:
        ps = settings.policy_settings(s)
    assert ps.half_life_s == 36 * 3600 and ps.config.reclaim == "entitlement"
    assert settings.parse_duration("90m", limits.HALF_LIFE) == 5400
    assert settings.parse_duration("7d", limits.HALF_LIFE) == 604800


def test_a_transaction_that_changes_accounts_or_nodes_reads_them_again(tree):
    """The per-transaction directory and capacity (services.directory) are dropped by the
    flush that writes an account or a node, whoever wrote it: one rule, no caller's call."""
    from scheduler.services import directory

    with session_scope(tree) as s:
        assert "c" not in directory.directory(s).by_name and directory.capacity(s).total_slices == 8
        accounts.add_account(s, "c", weight=1)
        assert directory.directory(s).get("c").parent_id is None
        accounts.set_account(s, "c", max_pending=5)
        assert directory.directory(s).get("c").max_pending == 5
        capacity.set_node(s, node="n2", gpus=1, slices_per_gpu=4, gpu_type="T4", at=NOW)
        assert directory.capacity(s).total_slices == 12
        accounts.remove_account(s, "c")
        assert "c" not in directory.directory(s).by_name
        memo = directory.directory(s)
        settings.set_setting(s, "algorithm", "classic")  # not an account or a node: the memo stays
        assert directory.directory(s) is memo
