"""What `jobs`, `job show` and `logs` print: a job's progress, position and estimated
start in words, and a job's logs, read once or followed.

Pure formatting over the API's answers (no database, nothing heavy at import), so the
commands in ``scheduler.cli.jobs`` stay thin and these functions are tested directly.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable

from scheduler.vocab import FINAL_STATES

FOLLOW_POLL_S = 1.0


def duration(seconds: float) -> str:
    """12s, 3m20s, 1h05m, 2d03h."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _count(x) -> str:
    return str(int(round(x))) if isinstance(x, (int, float)) else "?"


def progress_text(progress: dict | None) -> str | None:
    """``40/200 812/s eta 12s`` (the parts the task reported), or None."""
    if not progress or progress.get("step") is None:
        return None
    parts = [f"{_count(progress['step'])}/{_count(progress.get('steps'))}"
             if progress.get("steps") is not None else _count(progress["step"])]
    rate = progress.get("samples_per_second")
    if isinstance(rate, (int, float)):
        parts.append(f"{rate:.0f}/s" if rate >= 100 else f"{rate:.3g}/s")
    eta = progress.get("eta_s")
    if isinstance(eta, (int, float)):
        parts.append(f"eta {duration(eta)}")
    return " ".join(parts)


def short_time(iso: str | None) -> str | None:
    """An ISO 8601 time to the second (the table's width)."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).replace(microsecond=0).isoformat()
    except ValueError:
        return iso


def table_row(job: dict) -> dict:
    """A job as the `jobs` table shows it: times to the second, progress in words for a
    running job, position and estimated start for a pending one."""
    row = dict(job)
    for key in ("submitted_at", "started_at", "finished_at", "estimated_start"):
        row[key] = short_time(job.get(key))
    progress = job.get("progress")
    current = job.get("state") == "RUNNING" and progress and not _before(progress.get("updated_at"),
                                                                          job.get("started_at"))
    row["progress"] = progress_text(progress) if current else None  # not an earlier attempt's
    return row


def _before(a: str | None, b: str | None) -> bool:
    try:
        return a is not None and b is not None and datetime.fromisoformat(a) < datetime.fromisoformat(b)
    except ValueError:
        return False


def show_value(key: str, value) -> str:
    """A field of `job show`: progress in words (and when it was reported)."""
    if value is None:
        return "-"
    if key == "progress" and isinstance(value, dict):
        text = progress_text(value) or "-"
        at = short_time(value.get("updated_at"))
        return f"{text} (reported {at})" if at else text
    if key == "estimated_start":
        return short_time(value) or "-"
    return str(value)


# -- logs ---------------------------------------------------------------------------------
FINISHED = tuple(s.value for s in FINAL_STATES)


class LogPrinter:
    """Prints events and output chunks, each only once, with `--- attempt N ---` headers."""

    def __init__(self, echo: Callable[..., None]):
        self.echo = echo
        self.attempt: int | None = None
        self.at_line_start = True
        self.last_event: int | None = None

    def _newline(self) -> None:
        if not self.at_line_start:
            self.echo("")
            self.at_line_start = True

    def events(self, events: list[dict]) -> None:
        for e in events:
            self._newline()
            self.echo(f"{e['at']}  {e['kind']:<10} {e['message'] or ''}".rstrip())
            self.last_event = max(self.last_event or 0, e["id"])
            self.attempt = None  # output after an event gets its header again

    def output(self, chunks: list[dict]) -> None:
        for c in chunks:
            if not c["text"]:
                continue
            if c["attempt"] != self.attempt:
                self._newline()
                self.echo(f"--- attempt {c['attempt']} ---")
                self.attempt = c["attempt"]
            self.echo(c["text"], nl=False)
            self.at_line_start = c["text"].endswith("\n")

    def end(self) -> None:
        self._newline()


def show_logs(call: Callable[[dict], dict], *, tail: int | None = None, follow: bool = False,
              echo: Callable[..., None], sleep: Callable[[float], None], poll_s: float = FOLLOW_POLL_S) -> None:
    """Print a job's events then its output (``call(params)`` asks the API); page through
    output over the size limit; with ``follow``, poll every ``poll_s`` for new events and
    output until the job has ended and everything is read. Ctrl-C ends it quietly."""
    printer = LogPrinter(echo)
    params: dict = {"tail": tail} if tail is not None else {}
    try:
        data = call(params)
        printer.events(data["events"])
        while True:
            printer.output(data["output"])
            done = data["state"] in FINISHED and not data["more"]
            if done or not (follow or data["more"]):
                break
            if not data["more"]:
                sleep(poll_s)
            params = {"since": data["cursor"]}
            if printer.last_event is not None:
                params["after_event"] = printer.last_event
            data = call(params)
            printer.events(data["events"])
    except KeyboardInterrupt:
        pass
    printer.end()
