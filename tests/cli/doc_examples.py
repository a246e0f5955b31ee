"""Reading the console examples of a docs page, for the tests that run them.

A ```console block holds `$ command` lines, each followed by the lines it should print.
"""
from __future__ import annotations

import re
from typing import Iterator


def examples(text: str) -> Iterator[tuple[str, list[str]]]:
    """(command, expected output lines) for every `$` line in every console block."""
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        cmd, expected = None, []
        for line in block.splitlines():
            if line.startswith("$ "):
                if cmd:
                    yield cmd, expected
                cmd, expected = line[2:], []
            elif line.strip():
                expected.append(line)
        if cmd:
            yield cmd, expected


def squash(s: str) -> str:
    """Whitespace collapsed, so table layout does not matter."""
    return " ".join(s.split())
