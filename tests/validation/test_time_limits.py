"""``validate.parse_time_limit``: Slurm's --time forms and the unit forms, strictly. Pure."""
from __future__ import annotations

import pytest

from quota import limits
from scheduler.services import validate
from scheduler.services.errors import Invalid

from validation_helpers import one_line

M, H, D = 60.0, 3600.0, 86_400.0

ACCEPTED = {
    # text: seconds
    "1": 1 * M,  # a bare number is minutes, as in Slurm
    "90": 90 * M,
    "10:30": 10 * M + 30,  # MM:SS
    "100:00": 100 * M,  # the leading field has no bound
    "1:00:00": H,  # HH:MM:SS
    "36:00:00": 36 * H,
    "2-3": 2 * D + 3 * H,  # D-HH
    "2-03:04": 2 * D + 3 * H + 4 * M,  # D-HH:MM
    "2-03:04:05": 2 * D + 3 * H + 4 * M + 5,  # D-HH:MM:SS
    "0-00:00:01": 1.0,  # the lowest limit
    "30-00": 30 * D,  # the highest
    "90s": 90.0,  # unit forms, as parse_duration
    "10m": 10 * M,
    "2h": 2 * H,
    "3d": 3 * D,
    "1.5h": 1.5 * H,
    "1w": 7 * D,
}

BAD_FORM = ["", " 10", "10 ", "-5", "+5", "1.5", "1e3", "1:5", "1:2:3", "1-2:3", "1-", "-1", "1:00:00:00",
            "1-2-3", "10y", "10M", "2H", "1h30", "UNLIMITED", "infinite", "nan", "٣", "1:00 ", "2-3h", "x" * 40]
OUT_OF_RANGE = ["0", "00:00", "0:00:00", "0-00", "0s", "30-00:00:01", "31d", "43201", "5w", "99999999999"]
BAD_FIELDS = {"1:60": "minutes and seconds", "1:00:60": "minutes and seconds", "1:60:00": "minutes and seconds",
              "1-2:60": "minutes and seconds", "1-2:00:99": "minutes and seconds", "2-24": "hours after 'D-'"}


@pytest.mark.parametrize("text, seconds", ACCEPTED.items(), ids=list(ACCEPTED))
def test_accepted_forms(text, seconds):
    assert validate.parse_time_limit(text) == seconds


@pytest.mark.parametrize("text", BAD_FORM)
def test_anything_else_is_refused_naming_the_field_and_the_forms(text):
    with pytest.raises(Invalid) as err:
        validate.parse_time_limit(text, "max_time")
    message = str(err.value)
    assert message.startswith(f"max_time must be {validate.TIME_LIMIT_FORMS} (got ") and one_line(message)


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_outside_the_range_is_refused_with_the_range(text):
    with pytest.raises(Invalid) as err:
        validate.parse_time_limit(text)
    assert str(err.value) == f"time must be {validate.describe_duration(limits.TIME_LIMIT)} (got {text})"
    assert validate.describe_duration(limits.TIME_LIMIT) == "1s to 30d"


@pytest.mark.parametrize("text, phrase", BAD_FIELDS.items(), ids=list(BAD_FIELDS))
def test_minutes_seconds_and_hours_past_their_clock_are_refused(text, phrase):
    with pytest.raises(Invalid, match=phrase) as err:
        validate.parse_time_limit(text)
    assert str(err.value).startswith(f"time {text!r}: ") and one_line(str(err.value))


def test_non_text_is_refused():
    for value in (None, 10, 1.5, b"10"):
        with pytest.raises(Invalid, match="^time must be MM, "):
            validate.parse_time_limit(value)


@pytest.mark.parametrize("seconds, text", [(90, "90s"), (600, "10m"), (5400, "90m"), (7200, "2h"), (86_400, "1d"),
                                           (3725, "3725s"), (1.5, "1.5s")])
def test_human_duration_round_trips_through_the_parser(seconds, text):
    assert validate.human_duration(seconds) == text
    if seconds >= 1 and float(seconds).is_integer():
        assert validate.parse_time_limit(text) == seconds
