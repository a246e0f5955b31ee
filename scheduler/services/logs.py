"""A job's logs: its event history and its task's own output, attempt by attempt.

The output of attempt n is the file ``scheduler.runtime.jobfiles.log_path(root, job, n)`` (capped
by the task at ``jobfiles.LOG_CAP_BYTES``). A reader names where it stopped with a
**cursor** ``"<attempt>:<byte offset>"``: the next read returns that attempt's output
from the offset, then every later attempt's from its start. Attempts follow one another,
so one cursor is enough to follow a job (an attempt's file stops growing once the next
one starts).

Invariants:
- A response carries at most ``MAX_OUTPUT_BYTES`` of output; ``more`` says that the
  cursor stopped short of the end (read again from it). Chunks end on a line boundary
  where the limit cut them, and never inside a UTF-8 character.
- ``tail=N`` keeps the last N lines of the output after the cursor (over attempts); its
  cursor is the end of the output, so a follower goes on from there.
- Without a results directory (or once the files are gone) a finished job's output is
  its result's ``log`` (the last 20,000 characters the task kept), shown as its last attempt's.
- Nothing here writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from quota import limits
from scheduler.runtime import jobfiles
from scheduler.services import validate
from scheduler.services.errors import Invalid
from scheduler.store import Job, JobState

MAX_OUTPUT_BYTES = 256 * 1024
CURSOR_PATTERN = r"^[0-9]{1,10}:[0-9]{1,10}$"


@dataclass(frozen=True, order=True)
class Cursor:
    attempt: int
    offset: int

    def __str__(self) -> str:
        return f"{self.attempt}:{self.offset}"


START = Cursor(1, 0)


def parse_cursor(text: str | None) -> Cursor:
    """``"<attempt>:<offset>"`` (None: the start). Invalid (HTTP 422) otherwise."""
    if text is None:
        return START
    attempt, sep, offset = str(text).partition(":")
    if not sep or not _digits(attempt) or not _digits(offset):
        shown = str(text) if len(str(text)) <= 40 else str(text)[:37] + "..."
        raise Invalid(f"since must be <attempt>:<byte offset>, e.g. 2:1024 (got {shown!r})")
    return Cursor(validate.number(limits.ID, int(attempt), "since attempt"),
                  validate.number(limits.LOG_OFFSET, int(offset), "since offset"))


def _digits(text: str) -> bool:
    return 0 < len(text) <= 10 and text.isascii() and text.isdigit()


@dataclass(frozen=True)
class Chunk:
    attempt: int
    offset: int  # where `text` starts in the attempt's output (bytes)
    text: str


@dataclass(frozen=True)
class Output:
    chunks: list[Chunk]
    cursor: Cursor  # where the next read goes on
    more: bool  # the byte limit stopped this read before the end


def _read(path: Path, start: int, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(size)
    except OSError:
        return b""


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


_CONTINUATION = bytes(range(0x80, 0xC0))  # bytes inside a UTF-8 character


def _whole_chars(data: bytes) -> bytes:
    """``data`` less a UTF-8 character cut at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its character complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


def _files(root, job_id: int, attempts: int, since: Cursor) -> tuple[list[tuple[int, Path, int, int]], bool]:
    """(attempt, path, start, size) of each attempt from the cursor on with output after it;
    and whether any attempt of the job has a log file at all."""
    out, found = [], False
    for n in range(1, attempts + 1):
        path = jobfiles.log_path(root, job_id, n)
        size = _size(path)
        found = found or size is not None
        if size is None or n < since.attempt:
            continue
        start = since.offset if n == since.attempt else 0
        if size > start:
            out.append((n, path, start, size))
    return out, found


def read_output(root, job: Job, *, since: Cursor = START, tail: int | None = None,
                limit: int = MAX_OUTPUT_BYTES) -> Output:
    """The job's output after ``since`` (see the module invariants)."""
    if tail is not None:
        validate.number(limits.LOG_TAIL, tail, "tail")
    files, found = _files(root, job.id, job.attempts, since) if root is not None else ([], False)
    if not found:
        return _from_result(job, since, tail)
    if not files:
        return Output([], since, False)
    if tail is not None:
        return Output(_tail(files, tail, limit), Cursor(files[-1][0], files[-1][3]), False)
    chunks, budget, cursor = [], limit, since
    for i, (n, path, start, size) in enumerate(files):
        final = i == len(files) - 1
        data = _read(path, start, min(size - start, budget))
        cut = len(data) < size - start
        if cut:
            data = _cut(data)
        elif final:  # a character the task is still writing waits for the next read
            data = _whole_chars(data)
        if data:
            chunks.append(Chunk(n, start, data.decode("utf-8", errors="replace")))
        cursor = Cursor(n, start + len(data))
        budget -= len(data)
        if cut or (budget <= 0 and not final):
            return Output(chunks, cursor, True)
    return Output(chunks, cursor, False)


def _cut(data: bytes) -> bytes:
    """A chunk the limit cut: up to its last newline if it has one, else whole characters."""
    newline = data.rfind(b"\n")
    return data[:newline + 1] if newline >= 0 else _whole_chars(data)


def _tail(files, lines: int, limit: int) -> list[Chunk]:
    """The last ``lines`` lines over ``files`` (at most ``limit`` bytes, newest kept)."""
    if lines == 0:
        return []
    picked: list[Chunk] = []
    found, budget = 0, limit
    for n, path, start, size in reversed(files):
        begin = max(start, size - budget)
        data = _read(path, begin, size - begin)
        if begin > start:  # cut by the byte budget: start after a newline (or on a whole character)
            newline = data.find(b"\n")
            data = data[newline + 1:] if 0 <= newline < len(data) - 1 else data.lstrip(_CONTINUATION)
            begin = size - len(data)
        keep = data.splitlines(keepends=True)
        take = keep[-(lines - found):]
        taken = b"".join(take)
        if taken:
            picked.append(Chunk(n, size - len(taken), taken.decode("utf-8", errors="replace")))
        found += len(take)
        budget -= len(taken)
        if found >= lines or budget <= 0 or begin > start:
            break
    return list(reversed(picked))


def _from_result(job: Job, since: Cursor, tail: int | None) -> Output:
    """No log file: a finished job's result log, as its last attempt's output."""
    log = (job.result or {}).get("log") if isinstance(job.result, dict) else None
    attempt = max(job.attempts, 1)
    if not isinstance(log, str) or not log or since > Cursor(attempt, 0):
        return Output([], max(since, START), False)
    if tail is not None:
        log = "".join(log.splitlines(keepends=True)[-tail:]) if tail else ""
    end = Cursor(attempt, len(log.encode("utf-8")))
    return Output([Chunk(attempt, 0, log)] if log else [], end, False)


def job_logs(session: Session, job_id: int, accounts: frozenset[str] | set[str] | None, root, *,
             since: str | None = None, tail: int | None = None, after_event: int | None = None) -> dict:
    """``GET /v1/jobs/{id}/logs``: the job's events (after ``after_event``) and its output
    (after the cursor ``since``, or its last ``tail`` lines); NotFound if not the caller's."""
    from scheduler.services.jobs import get_job, job_events

    cursor = parse_cursor(since)
    validate.optional(limits.LOG_TAIL, tail, "tail")
    validate.optional(limits.ID, after_event, "after_event")
    job = get_job(session, job_id, accounts)
    events = [{"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "message": e.message}
              for e in job_events(session, job.id, after=after_event)]
    out = read_output(root, job, since=cursor, tail=tail)
    return {"id": job.id, "state": JobState(job.state).value, "events": events,
            "output": [{"attempt": c.attempt, "offset": c.offset, "text": c.text} for c in out.chunks],
            "cursor": str(out.cursor), "more": out.more}
