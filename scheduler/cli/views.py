"""What `jobs`, `job show` and `logs` print: a job's progress, position and estimated
start in words, the `jobs` table (squeue's compact default, ``--format`` to pick
fields), and a job's logs, read once or followed, in time order.

Times go through the one formatter (``scheduler.cli.formatting``): ISO 8601, to the
second. Progress counts the steps asked for (the task leaves the warm-up out); a finished
job shows no ETA.

Pure formatting over the API's answers (no database, nothing heavy at import), so the
commands in ``scheduler.cli.jobs`` stay thin and these functions are tested directly.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Callable

from scheduler.cli.formatting import duration, figure, instant, is_time_key, when
from scheduler.vocab import ADMITTED, ENDS_ATTEMPT, FINAL_STATES

FOLLOW_POLL_S = 1.0
FINISHED = tuple(s.value for s in FINAL_STATES)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _count(x) -> str:
    return str(int(round(x))) if isinstance(x, (int, float)) else "?"


def progress_text(progress: dict | None, *, finished: bool = False, rate: bool = True) -> str | None:
    """``40/200 812/s eta 12s`` (the parts the task reported), or None. Steps are the
    steps asked for (the task leaves its warm-up out); a ``finished`` job has no ETA;
    without ``rate``, no samples per second (the compact table's)."""
    if not progress or progress.get("step") is None:
        return None
    parts = [f"{_count(progress['step'])}/{_count(progress.get('steps'))}"
             if progress.get("steps") is not None else _count(progress["step"])]
    per_s = progress.get("samples_per_second")
    if rate and isinstance(per_s, (int, float)):
        parts.append(f"{per_s:.0f}/s" if per_s >= 100 else f"{per_s:.3g}/s")
    eta = progress.get("eta_s")
    if isinstance(eta, (int, float)) and not finished:
        parts.append(f"eta {duration(eta)}")
    return " ".join(parts)


def table_row(job: dict) -> dict:
    """A job as the `jobs` table shows it: times to the second, progress in words for a
    running job, position and estimated start for a pending one, and the derived fields
    of FIELDS (``node_reason``, ``time_limit``)."""
    row = dict(job)
    for key in ("submitted_at", "started_at", "finished_at", "estimated_start"):
        row[key] = when(job.get(key))
    progress = job.get("progress")
    current = job.get("state") == "RUNNING" and progress and not _before(progress.get("updated_at"),
                                                                          job.get("started_at"))
    row["progress"] = progress_text(progress, rate=False) if current else None  # not an earlier attempt's
    if job.get("state") == "PENDING":
        row["node_reason"] = f"({job['reason']})" if job.get("reason") else None
    elif job.get("state") == "RUNNING":
        row["node_reason"] = job.get("node")
    else:
        row["node_reason"] = _cut(job.get("reason"), REASON_WIDTH)
    limit = job.get("time_limit_s")
    row["time_limit"] = duration(limit) if isinstance(limit, (int, float)) else None
    return row


def _before(a: str | None, b: str | None) -> bool:
    at, bt = instant(a), instant(b)
    return at is not None and bt is not None and at < bt


def _cut(text: str | None, width: int) -> str | None:
    return text if text is None or len(text) <= width else text[:width - 3] + "..."


# -- the `jobs` table: squeue's compact default, and --format to pick fields ------------
# field -> (header, key of table_row's row)
FIELDS = {"id": ("id", "id"), "account": ("account", "account"), "model": ("model", "model"),
          "framework": ("framework", "framework"), "slices": ("slices", "slices"), "state": ("state", "state"),
          "reason": ("reason", "reason"), "node_reason": ("node(reason)", "node_reason"), "node": ("node", "node"),
          "gpu": ("gpu", "gpu"), "progress": ("progress", "progress"), "position": ("position", "position"),
          "start": ("est_start", "estimated_start"), "submitted": ("submitted", "submitted_at"),
          "started": ("started", "started_at"), "finished": ("finished", "finished_at"),
          "time_limit": ("time_limit", "time_limit")}
DEFAULT_FORMAT = "id,account,model,slices,state,node_reason,progress"
REASON_WIDTH = 15  # a finished job's reason, cut in the table (`job show` has it whole)


def parse_format(text: str) -> list[str]:
    """``--format``'s comma-separated FIELDS, checked (ValueError names the unknown one)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--format needs at least one field of: {', '.join(FIELDS)}")
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    return names


def columns(rows: list[dict], fields: list[str]) -> list[str]:
    """The table as lines, squeue-like: a header, one line per row, columns one space
    apart and as wide as their widest cell (numbers right-aligned); no wrapping."""
    headers = [FIELDS[f][0] for f in fields]
    cells = [[_text(row.get(FIELDS[f][1])) for f in fields] for row in rows]
    widths = [max([len(h), *(len(line[i]) for line in cells)]) for i, h in enumerate(headers)]
    values = [[row.get(FIELDS[f][1]) for row in rows] for f in fields]
    right = [any(v is not None for v in vs) and all(v is None or isinstance(v, (int, float)) for v in vs)
             for vs in values]
    out = []
    for line in [headers, *cells]:
        out.append(" ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right)).rstrip())
    return out


def _text(value) -> str:
    return "-" if value is None else figure(value) if isinstance(value, float) else str(value)


def show_value(key: str, value, *, finished: bool = False) -> str:
    """A field of `job show`: times ISO 8601 to the second, progress in words (and when
    it was reported; a finished job's without an ETA), durations and figures for people."""
    if value is None:
        return "-"
    if key == "progress" and isinstance(value, dict):
        text = progress_text(value, finished=finished) or "-"
        at = when(value.get("updated_at"))
        return f"{text} (reported {at})" if at else text
    if is_time_key(key):
        return when(value) or "-"
    if key == "time_limit_s" and isinstance(value, (int, float)):
        return duration(value)
    if isinstance(value, float):
        return figure(value, 4, trim=True)
    return str(value)


# -- logs ---------------------------------------------------------------------------------
class LogPrinter:
    """Prints events and output chunks in time order, each only once, with one
    `--- attempt N ---` header per attempt.

    A read's events are put in time order (the "started" event is written when the attempt
    ends, with the time Ray started it). Output has no times of its own, so each
    attempt's output goes where the attempt was: after the event that admitted it and
    before the event that ended it (``vocab.ADMITTED``, ``vocab.ENDS_ATTEMPT``). An event
    that arrives while an attempt's output is being followed comes after the output
    already printed; that attempt's later output goes on below it, with no new header."""

    def __init__(self, echo: Callable[..., None]):
        self.echo = echo
        self.headed: set[int] = set()  # attempts whose header is printed
        self.attempt = 0  # the attempt the events have reached (admissions seen)
        self.at_line_start = True
        self.last_event: int | None = None

    def _newline(self) -> None:
        if not self.at_line_start:
            self.echo("")
            self.at_line_start = True

    def read(self, events: list[dict], chunks: list[dict]) -> None:
        """One answer of the API: its events and output, merged in time order."""
        pending = [c for c in chunks if c["text"]]
        for e in sorted(events, key=lambda e: (instant(e["at"]) or _EARLIEST, e["id"])):
            if e["kind"] == ADMITTED:
                self.attempt += 1
                pending = self._output(pending, self.attempt - 1)  # what came before this attempt
            elif e["kind"] in ENDS_ATTEMPT:
                pending = self._output(pending, max(self.attempt, max(self.headed, default=0)))
            self._newline()
            self.echo(f"{when(e['at'])}  {e['kind']:<10} {e['message'] or ''}".rstrip())
            self.last_event = max(self.last_event or 0, e["id"])
        self._output(pending, None)

    def _output(self, chunks: list[dict], upto: int | None) -> list[dict]:
        """Print the chunks of attempts up to ``upto`` (None: all); the others, kept."""
        kept = []
        for c in chunks:
            if upto is not None and c["attempt"] > upto:
                kept.append(c)
                continue
            if c["attempt"] not in self.headed:
                self._newline()
                self.echo(f"--- attempt {c['attempt']} ---")
                self.headed.add(c["attempt"])
            self.echo(c["text"], nl=False)
            self.at_line_start = c["text"].endswith("\n")
        return kept

    def end(self) -> None:
        self._newline()


def show_logs(call: Callable[[dict], dict], *, tail: int | None = None, follow: bool = False,
              echo: Callable[..., None], sleep: Callable[[float], None], poll_s: float = FOLLOW_POLL_S) -> None:
    """Print a job's events and output in time order (``call(params)`` asks the API; see
    LogPrinter); page through output over the size limit; with ``follow``, poll every
    ``poll_s`` for new events and output until the job has ended and everything is read.
    Ctrl-C ends it quietly."""
    printer = LogPrinter(echo)
    params: dict = {"tail": tail} if tail is not None else {}
    try:
        data = call(params)
        while True:
            printer.read(data["events"], data["output"])
            done = data["state"] in FINISHED and not data["more"]
            if done or not (follow or data["more"]):
                break
            if not data["more"]:
                sleep(poll_s)
            params = {"since": data["cursor"]}
            if printer.last_event is not None:
                params["after_event"] = printer.last_event
            data = call(params)
    except KeyboardInterrupt:
        pass
    printer.end()
