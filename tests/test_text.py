"""scheduler.text.first_line: the one way an error is said in one line."""
from __future__ import annotations

import pytest

from scheduler.text import first_line

CASES = {
    "first line, stripped": ("  no job 3  \nmore", None, "no job 3"),
    "blank lines skipped": ("\n \n  refused\nthen", None, "refused"),
    "an exception's message": (ValueError("weight\nis not finite"), None, "weight"),
    "an exception without one: its type": (ValueError(), None, "ValueError"),
    "blank text: empty": ("  \n", None, ""),
    "a default wins": (RuntimeError(" "), "no reason given", "no reason given"),
    "a default unused": ("x", "no reason given", "x"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_first_line(name):
    what, default, want = CASES[name]
    assert first_line(what, default) == want
