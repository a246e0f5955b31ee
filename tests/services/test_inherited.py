"""Inherited account settings (default and maximum time, scripts) and the time limit a job
gets at submit: the pure walk, then the services on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from quota.limits import LimitError
from scheduler.services import accounts, capacity, inherited, jobs
from scheduler.services.errors import DomainError, Invalid, NotFound
from scheduler.services.inherited import EffectiveSettings, Own
from scheduler.store import Job, session_scope

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
H, D = 3600.0, 86_400.0
HOLD = dict(model="hold", framework=None, mode="train", slices=1, spec={"seconds": 5})


def rows(*own: Own) -> dict[str, Own]:
    return {o.name: o for o in own}


RESOLVE = {
    # case: (rows, account, expected)
    "built-in at the top": (rows(Own("u", None)), "u", EffectiveSettings(None, None, False)),
    "own values": (rows(Own("u", None, H, D, True)), "u", EffectiveSettings(H, D, True, "u", "u", "u")),
    "inherited from the parent": (rows(Own("u", None, H, D, True), Own("u/a", "u")), "u/a",
                                  EffectiveSettings(H, D, True, "u", "u", "u")),
    "nearest ancestor wins": (rows(Own("u", None, H, D, False), Own("u/a", "u", 2 * H, None, True),
                                   Own("u/a/b", "u/a")), "u/a/b",
                              EffectiveSettings(2 * H, D, True, "u/a", "u", "u/a")),
    "own beats inherited, larger or smaller": (rows(Own("u", None, H, D, True), Own("u/a", "u", None, 2 * D, False)),
                                               "u/a", EffectiveSettings(H, 2 * D, False, "u", "u/a", "u/a")),
    "an explicit False is not inheriting": (rows(Own("u", None, allow_scripts=True), Own("u/a", "u", allow_scripts=False),
                                                 Own("u/a/b", "u/a")), "u/a/b",
                                            EffectiveSettings(None, None, False, allow_scripts_from="u/a")),
}


@pytest.mark.parametrize("case", list(RESOLVE))
def test_resolve_walks_up_to_the_nearest_value(case):
    tree, name, expected = RESOLVE[case]
    assert inherited.resolve(inherited.chain_of(tree, name)) == expected


LIMIT = {
    # case: (effective, asked, expected limit or the error's phrase)
    "asked": (EffectiveSettings(H, D, False), 2 * H, 2 * H),
    "asked, no maximum": (EffectiveSettings(None, None, False), 30 * D, 30 * D),
    "asked, exactly the maximum": (EffectiveSettings(None, D, False), D, D),
    "the default": (EffectiveSettings(H, D, False), None, H),
    "the maximum without a default": (EffectiveSettings(None, D, False), None, D),
    "none at all": (EffectiveSettings(None, None, False), None, None),
    "over the maximum": (EffectiveSettings(H, 2 * H, False), 3 * H,
                         "time limit 3h exceeds the maximum of 2h for account uni-north"),
    "below the range": (EffectiveSettings(None, None, False), 0.5, "time_limit_s must be 1 to 2,592,000 s"),
}


@pytest.mark.parametrize("case", list(LIMIT))
def test_job_time_limit(case):
    eff, asked, expected = LIMIT[case]
    if isinstance(expected, str):
        with pytest.raises((Invalid, LimitError), match=expected):
            inherited.job_time_limit(eff, asked, "uni-north")
    else:
        assert inherited.job_time_limit(eff, asked, "uni-north") == expected


@pytest.fixture
def tree(db_engine):
    """u (1h default, 1d max, scripts) > u/a (its own 2d max) > u/a/b; u/c; and v with nothing set."""
    with session_scope(db_engine) as s:
        capacity.set_node(s, node="n1", gpus=2, slices_per_gpu=4, gpu_type="T4", at=NOW)
        accounts.add_account(s, "u", weight=1, default_time_s=H, max_time_s=D, allow_scripts=True)
        accounts.add_account(s, "u/a", weight=1, parent="u", max_time_s=2 * D)
        accounts.add_account(s, "u/a/b", weight=1, parent="u/a")
        accounts.add_account(s, "u/c", weight=1, parent="u", allow_scripts=False)
        accounts.add_account(s, "v", weight=1)
    return db_engine


def effective(engine, name):
    with session_scope(engine) as s:
        return inherited.effective_settings(s, name)


def test_effective_settings_inherit_down_the_tree(tree):
    assert effective(tree, "u") == EffectiveSettings(H, D, True, "u", "u", "u")
    assert effective(tree, "u/a/b") == EffectiveSettings(H, 2 * D, True, "u", "u/a", "u")
    assert effective(tree, "u/c") == EffectiveSettings(H, D, False, "u", "u", "u/c")
    assert effective(tree, "v") == EffectiveSettings(None, None, False)
    with pytest.raises(NotFound):
        effective(tree, "nope")
    with session_scope(tree) as s:
        listed = {r["account"]: r for r in accounts.list_accounts(s)}
    assert listed["u/a/b"]["default_time_s"] is None and listed["u/a/b"]["effective"] == {
        "default_time_s": H, "max_time_s": 2 * D, "allow_scripts": True,
        "from": {"default_time_s": "u", "max_time_s": "u/a", "allow_scripts": "u"}}
    assert listed["u/c"]["allow_scripts"] is False


def test_clearing_a_value_inherits_again(tree):
    with session_scope(tree) as s:
        accounts.set_account(s, "u/a", max_time_s=None)
        accounts.set_account(s, "u/c", allow_scripts=None, default_time_s=30 * 60)
    assert effective(tree, "u/a/b").max_time_s == D
    assert effective(tree, "u/c") == EffectiveSettings(30 * 60, D, True, "u/c", "u", "u")
    with session_scope(tree) as s:  # other settings are left alone by a change
        accounts.set_account(s, "u", weight=2)
    assert effective(tree, "u") == EffectiveSettings(H, D, True, "u", "u", "u")


def dump(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT name, parent_id, default_time_s, max_time_s, allow_scripts FROM account "
                                    "ORDER BY name")).all()


REFUSED = {
    # case: (call, error, message)
    "own default over own max": (
        lambda s: accounts.add_account(s, "w", weight=1, default_time_s=2 * H, max_time_s=H), DomainError,
        "account w: default time 2h exceeds its maximum of 1h"),
    "a child's default over the inherited max": (
        lambda s: accounts.set_account(s, "u/c", default_time_s=2 * D), DomainError,
        "account u/c: default time 2d exceeds the maximum of 1d inherited from u"),
    "a new child's default over the inherited max": (
        lambda s: accounts.add_account(s, "u/d", weight=1, parent="u", default_time_s=3 * D), DomainError,
        "account u/d: default time 3d exceeds the maximum of 1d inherited from u"),
    "a max below the own default": (
        lambda s: accounts.set_account(s, "u", max_time_s=30 * 60), DomainError,
        "account u: default time 1h exceeds its maximum of 30m"),
    "a child's max below the inherited default": (
        lambda s: accounts.set_account(s, "u/a/b", max_time_s=60), DomainError,
        "account u/a/b: default time 1h inherited from u exceeds its maximum of 1m"),
    "a parent's default change that breaks a grandchild": (
        lambda s: (accounts.set_account(s, "u/a/b", max_time_s=2 * H), accounts.set_account(s, "u", default_time_s=3 * H)),
        DomainError, "account u/a/b: default time 3h inherited from u exceeds its maximum of 2h"),
    "a parent's max change under a child's default": (
        lambda s: (accounts.set_account(s, "u/c", default_time_s=12 * H), accounts.set_account(s, "u", max_time_s=6 * H)),
        DomainError, "account u/c: default time 12h exceeds the maximum of 6h inherited from u"),
    "a new child's max below the inherited default": (
        lambda s: (accounts.set_account(s, "v", default_time_s=2 * D, max_time_s=3 * D),
                   accounts.add_account(s, "v/x", weight=1, parent="v", max_time_s=D)),
        DomainError, "account v/x: default time 2d inherited from v exceeds its maximum of 1d"),
    "a time out of range": (lambda s: accounts.add_account(s, "w", weight=1, max_time_s=31 * D), LimitError,
                            "account w: max_time_s must be 1 to 2,592,000 s (got 2678400.0)"),
    "a time of zero": (lambda s: accounts.set_account(s, "u", default_time_s=0), LimitError,
                       "account u: default_time_s must be 1 to 2,592,000 s (got 0)"),
    "a time that is not a number": (lambda s: accounts.set_account(s, "u", max_time_s=float("nan")), LimitError,
                                    "account u: max_time_s must be 1 to 2,592,000 s (got nan)"),
    "scripts not a bool": (lambda s: accounts.set_account(s, "u", allow_scripts="yes"), Invalid,
                           "account u: allow_scripts must be true, false or null (got 'yes')"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_write_nothing(tree, case):
    call, error, message = REFUSED[case]
    before = dump(tree)
    with pytest.raises(error) as err:
        with session_scope(tree) as s:
            call(s)
    assert str(err.value) == message
    assert dump(tree) == before


def test_moving_an_account_under_a_lower_maximum_is_refused(tree):
    with session_scope(tree) as s:
        accounts.set_account(s, "v", max_time_s=2 * H)
        accounts.add_account(s, "w", weight=1, default_time_s=12 * H)
    with pytest.raises(DomainError, match="account w: default time 12h exceeds the maximum of 2h inherited from v"):
        with session_scope(tree) as s:
            accounts.set_account(s, "w", parent="v")


def limits_of(engine, ids) -> list[float | None]:
    with session_scope(engine) as s:
        return [s.get(Job, i).time_limit_s for i in ids]


def test_a_job_gets_its_limit_at_submit(tree):
    with session_scope(tree) as s:
        accounts.set_account(s, "u/c", default_time_s=None, max_time_s=6 * H)
        accounts.set_account(s, "u", default_time_s=None)
        accounts.set_account(s, "u/a", default_time_s=30 * 60)
    with session_scope(tree) as s:
        ids = [
            *jobs.submit_array(s, count=1, account="u/a/b", at=NOW, time_limit_s=2 * D, **HOLD),  # up to its max
            *jobs.submit_array(s, count=1, account="u/a/b", at=NOW, **HOLD),  # the inherited default
            *jobs.submit_array(s, count=1, account="u/c", at=NOW, **HOLD),  # no default: the maximum
            *jobs.submit_array(s, count=1, account="v", at=NOW, **HOLD),  # nothing set: no limit
            *jobs.submit_array(s, count=1, account="v", at=NOW, time_limit_s=90, **HOLD),
        ]
    assert limits_of(tree, ids) == [2 * D, 30 * 60, 6 * H, None, 90]


def test_a_job_array_gets_the_same_limit_each(tree):
    with session_scope(tree) as s:
        ids = jobs.submit_array(s, count=3, account="u/c", at=NOW, **HOLD)
        more = jobs.submit_array(s, count=2, account="u/c", at=NOW, time_limit_s=20 * H, **HOLD)
    assert limits_of(tree, ids) == [H] * 3 and limits_of(tree, more) == [20 * H] * 2


@pytest.mark.parametrize("account, asked, error, message", [
    ("u/c", 25 * H, Invalid, "time limit 25h exceeds the maximum of 1d for account u/c"),
    ("u/a/b", 3 * D, Invalid, "time limit 3d exceeds the maximum of 2d for account u/a/b"),
    ("v", 0, LimitError, "time_limit_s must be 1 to 2,592,000 s (got 0)"),
    ("v", 31 * D, LimitError, "time_limit_s must be 1 to 2,592,000 s"),
    ("v", float("inf"), LimitError, "time_limit_s must be 1 to 2,592,000 s (got inf)"),
])
def test_a_limit_over_the_maximum_or_out_of_range_is_refused_and_nothing_written(tree, account, asked, error, message):
    for submit in (lambda s: jobs.submit_array(s, count=1, account=account, at=NOW, time_limit_s=asked, **HOLD),
                   lambda s: jobs.submit_array(s, count=2, account=account, at=NOW, time_limit_s=asked, **HOLD)):
        with pytest.raises(error) as err:
            with session_scope(tree) as s:
                submit(s)
        assert str(err.value).startswith(message)
    with tree.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM job")).scalar_one() == 0
