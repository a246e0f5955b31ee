"""The usage CSV's `at` column is read by the one strict time parser, `validate.parse_when`:
the same forms, the same UTC values and the same refusals as `fairgpu report --since`,
each refusal one line naming the file's line."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.services.errors import DomainError, Invalid
from scheduler.services.usage import read_usage_csv
from scheduler.services.validate import parse_when

ACCOUNTS = {"a": 1, "a/x": 2}

ACCEPTED = {
    "2026-11-20": datetime(2026, 11, 20, tzinfo=UTC),
    "2026-11-20T09:30": datetime(2026, 11, 20, 9, 30, tzinfo=UTC),  # no zone: UTC
    "2026-11-20T09:30:15Z": datetime(2026, 11, 20, 9, 30, 15, tzinfo=UTC),
    "2026-11-20 09:30:15.25+02:00": datetime(2026, 11, 20, 7, 30, 15, 250000, tzinfo=UTC),
    "2026-11-20T00:30:00-01:00": datetime(2026, 11, 20, 1, 30, tzinfo=UTC),
    " 2026-11-20T09:30Z ": datetime(2026, 11, 20, 9, 30, tzinfo=UTC),  # cells are stripped, as every column
    "1970-01-01T00:00:00Z": datetime(1970, 1, 1, tzinfo=UTC),
}

REFUSED = ["yesterday", "2026-W47-5", "2026-324", "20261120", "2026-11-20T09", "2026-11-20T09:30+0200",
           "2026-02-30", "1969-12-31T23:59:59Z", "2026-11-20T25:00", ""]


def _write(tmp_path, *rows: str):
    path = tmp_path / "usage.csv"
    path.write_text("account,slice_seconds,at\n" + "".join(f"{r}\n" for r in rows))
    return path


@pytest.mark.parametrize("text", ACCEPTED, ids=repr)
def test_accepted_times_are_what_parse_when_reads(tmp_path, text):
    [(account, seconds, at)] = read_usage_csv(_write(tmp_path, f"a/x,60,{text}"), ACCOUNTS)
    assert (account, seconds) == (2, 60.0)
    assert at == ACCEPTED[text] == parse_when(text.strip(), "at")
    assert at.tzinfo is UTC


@pytest.mark.parametrize("text", REFUSED, ids=repr)
def test_refused_times_are_parse_whens_refusals_with_the_line(tmp_path, text):
    with pytest.raises(Invalid) as expected:
        parse_when(text, "at")
    path = _write(tmp_path, "a,1,2026-11-20", f"a,1,{text}")
    with pytest.raises(DomainError) as err:
        read_usage_csv(path, ACCOUNTS)
    message = str(err.value)
    assert message == f"{path}: line 3: {expected.value}"
    assert "\n" not in message
