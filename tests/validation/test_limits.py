"""The ranges of quota.limits, the strict parsers of services.validate, and the one error table.

Pure: no database. Each refusal is one line that names the field and what is allowed.
"""
from __future__ import annotations

import math

import pytest

from quota import QuotaError, limits
from quota.limits import LimitError
from scheduler.services import errors, validate
from scheduler.services.errors import DomainError, Forbidden, Invalid, NotFound
from scheduler.store import InvalidTransition, StaleJob, StoreError

NOT_NUMBERS = [float("nan"), float("inf"), float("-inf"), True, False, "1", None, [1]]


def test_every_bound_is_finite_and_every_integer_bound_fits_32_bits():
    for rng in limits.ALL:
        assert math.isfinite(rng.low) and math.isfinite(rng.high) and rng.low <= rng.high, rng
        if rng.integer:
            assert -limits.INT32_MAX - 1 <= rng.low and rng.high <= limits.INT32_MAX, rng
    assert limits.WEIGHT.high / limits.WEIGHT.low == pytest.approx(1e6)


@pytest.mark.parametrize("rng", limits.ALL, ids=[r.field for r in limits.ALL])
def test_bounds_are_accepted_and_anything_past_them_is_refused(rng):
    assert rng.check(rng.low) == rng.low and rng.check(rng.high) == rng.high
    past = [rng.low - 1, rng.high + 1, 2**31, 2**63, 2**64, -2**63, 10**400] if rng.integer else \
        [rng.low / 2 if rng.low > 0 else -1e-9, rng.high * 2 + 1, 1e308, -1e308]
    for value in past + NOT_NUMBERS:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value in rng:
            continue
        with pytest.raises(LimitError) as err:
            rng.check(value)
        message = str(err.value)
        assert message.startswith(f"{rng.field} must be {rng.describe()} (got ") and "\n" not in message, message
        assert len(message) < 200, message


def test_integer_fields_refuse_floats_and_name_the_given_field():
    with pytest.raises(LimitError, match=r"^token id must be an integer 1 to 2,147,483,647 \(got 1.5\)$"):
        limits.ID.check(1.5, "token id")
    with pytest.raises(LimitError, match=r"\(got 3.0\)$"):
        limits.ID.check(3.0)
    assert limits.ID.check(3) == 3 and limits.WEIGHT.check(3) == 3  # an int is a number for a float field
    assert issubclass(LimitError, QuotaError)


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("10m", 600), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("3600", 3600), ("1.5h", 5400),
    ("3650d", 3650 * 86400),
])
def test_durations_in_every_unit(text, seconds):
    assert validate.parse_duration(text, limits.TOKEN_LIFETIME) == seconds


@pytest.mark.parametrize("text, phrase", [
    ("7x", "a duration such as"), ("10y", "a duration such as"), ("-1d", "a duration such as"),
    ("nan", "a duration such as"), ("inf", "a duration such as"), ("1e9", "a duration such as"),
    ("", "a duration such as"), (" 7d", "a duration such as"), ("7d ", "a duration such as"),
    ("7 d", "a duration such as"), ("7D", "a duration such as"), ("7dd", "a duration such as"),
    ("1" * 40, "a duration such as"), ("\x007d", "a duration such as"),
    ("99999999999999999999d", "expires must be 1m to 3650d"), ("9" * 31 + "w", "expires must be 1m to 3650d"),
    ("3651d", "expires must be 1m to 3650d"), ("59s", "expires must be 1m to 3650d"), ("0", "expires must be"),
])
def test_durations_are_parsed_strictly(text, phrase):
    with pytest.raises(Invalid) as err:
        validate.parse_duration(text, limits.TOKEN_LIFETIME)
    assert phrase in str(err.value) and str(err.value).startswith("expires must be") and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["a", "uni-north", "uni-north/vision", "a.b_c-d/e1/f2", "0", "a" * 64])
def test_good_names_pass_unchanged(name):
    assert validate.account_name(name) == name


@pytest.mark.parametrize("name, phrase", [
    ("..", "'..'"), ("a/../b", "'..'"), ("a..b", "'..'"), ("../etc", "'..'"),
    ("a\x00b", "control characters"), ("a\tb", "control characters"), ("a\nb", "control characters"),
    ("a\x1b[31m", "control characters"), ("a\u200bb", "control characters"),
    (" a", "surrounding whitespace"), ("a ", "surrounding whitespace"),
    ("", "must not be empty"), ("/a", "each '/'-separated part"), ("a/", "each '/'-separated part"),
    ("a//b", "each '/'-separated part"), ("A", "each '/'-separated part"), ("-a", "each '/'-separated part"),
    ("a b", "each '/'-separated part"), ("a" * 65, "each '/'-separated part"), ("é", "each '/'-separated part"),
    ("/".join(["a" * 60] * 5), f"at most {limits.NAME_MAX_LEN} characters"),
])
def test_bad_names_are_refused_never_changed(name, phrase):
    with pytest.raises(Invalid) as err:
        validate.account_name(name, "name")
    assert phrase in str(err.value) and str(err.value).startswith("name") and "\n" not in str(err.value)


@pytest.mark.parametrize("name, parent, ok", [
    ("a", None, True), ("a", "b", True), ("b/x", "b", True), ("b/x/y", "b/x", True),
    ("b/x", None, False), ("b/x", "c", False), ("b/x/y", "b", False), ("b/x", "b/x", False),
])
def test_a_name_with_a_slash_spells_its_parent(name, parent, ok):
    if ok:
        validate.account_place(name, parent)
    else:
        with pytest.raises(Invalid, match="^name "):
            validate.account_place(name, parent)


@pytest.mark.parametrize("exc, status", [
    (NotFound("x"), 404), (Forbidden("x"), 403), (Invalid("x"), 422), (LimitError("x"), 422),
    (QuotaError("x"), 409), (DomainError("x"), 409), (InvalidTransition("x"), 409), (StaleJob("x"), 409),
    (StoreError("x"), 503),
])
def test_one_table_maps_each_domain_error_for_the_api_and_the_cli(exc, status):
    from scheduler.api.app import _status_for
    from scheduler.services.jobs import InvalidJob

    assert errors.classify(exc) == (status, 1)
    assert _status_for(exc) == status
    assert errors.classify(InvalidJob("x")).http_status == 422
    assert errors.classify(ValueError("x")) is None and errors.classify(KeyError("x")) is None


def test_the_cli_exits_with_the_tables_code_and_one_line():
    import click

    from scheduler.cli.common import domain_errors

    for exc in (NotFound("no job 3\nmore"), LimitError("weight must be x"), QuotaError("q"), StoreError("s")):
        @domain_errors
        def command():
            raise exc

        with pytest.raises(click.ClickException) as err:
            command()
        assert err.value.exit_code == errors.classify(exc).exit_code == 1
        assert err.value.message == str(exc).splitlines()[0]
    with pytest.raises(ValueError):
        domain_errors(lambda: (_ for _ in ()).throw(ValueError("a bug")))()
