"""`fairgpu bench` says what it measures while it measures: a rich bar on a terminal naming
the row being measured now, a line per finished row elsewhere (scheduler.cli.bench.progress_bar)."""
from __future__ import annotations

import io
import re

from rich.console import Console

from scheduler.cli.bench import progress_bar


def job(model: str, section: str = "train") -> dict:
    return {"section": section, "spec": {"model": model, "framework": "pytorch", "device": "cpu"}}


def row(model: str, **extra) -> dict:
    return {"section": "train", "model": model, "framework": "pytorch", "device": "cpu", "load": 0.1,
            "loaded": False, "cores": 2, **extra}


def test_a_terminal_gets_a_bar_naming_the_row_being_measured():
    out = io.StringIO()
    err = Console(file=out, force_terminal=True, width=120)
    jobs = [job("conv6"), job("vgg16"), job("resnet18", "latency")]
    with progress_bar(err, jobs) as on_row:
        (task,) = on_row.progress.tasks
        assert task.description == "measuring train conv6 pytorch cpu" and task.completed == 0 and task.total == 3
        on_row(row("conv6"))
        assert task.description == "measuring train vgg16 pytorch cpu" and task.completed == 1
        on_row(row("vgg16", error="boom"))
        assert task.description == "measuring latency resnet18 pytorch cpu"
        on_row(row("resnet18"))
        assert task.description == "done" and task.completed == 3
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # colours and cursor moves
    assert "warning: train vgg16 pytorch cpu failed: boom" in text
    assert "measuring" in text and "3/3" in text  # the bar itself was drawn, on the terminal


def test_a_log_gets_a_line_per_row():
    out = io.StringIO()
    err = Console(file=out, force_terminal=False, width=200)
    with progress_bar(err, [job("conv6"), job("vgg16")]) as on_row:
        on_row(row("conv6"))
        on_row(row("vgg16"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "measuring 2 rows"
    assert lines[1].startswith("[1/2] train conv6 pytorch cpu measured, ") and lines[1].endswith(" s so far")
    assert lines[2].startswith("[2/2] train vgg16 pytorch cpu measured, ")
    assert len(lines) == 3  # no bar drawn into a file
