"""The job row's one owner: what the loop reads of a job (`JobRow`), and how job rows are
encoded and decoded on each database, the fast paths included.

Invariants:
- `Job` (store/models.py) owns the columns and their types; everything here derives from
  the table by column name. Each `JobRow` field is the column of the same name (a `_json`
  suffix: that column's JSON, undecoded), checked at import, so a column added, dropped
  or moved cannot shift a field; the SELECTs list the fields, labelled with their names.
- Values are encoded and decoded only by SQLAlchemy's public type processors
  (`dialect_impl(dialect).bind_processor(dialect)`, `.result_processor(dialect, coltype)`):
  the fast paths store and read exactly what `Connection.execute` would. The processors
  are looked up once per dialect (`_codec`), by field name.
- SQLite reads go through the driver's cursor (SQLAlchemy's per-row result machinery was
  most of the cost of a re-read) and are decoded here; PostgreSQL reads go through
  `Connection.execute`, which applies the same processors. Both give equal rows.
- JSON fields are read as text (`sa.Text`'s processor) and decoded only when used
  (`JobRow.gpu_slices`, `.spec`): SQLite gives the stored text, psycopg the decoded value;
  `json_value` takes either, and `raw_json` gives a written value as a read would.
- A new job's row is every column at its model default, then what was submitted
  (`new_job`); `insert_jobs` writes rows and their "submitted" events, one pipelined
  statement per job on PostgreSQL (compiled by SQLAlchemy, never hand-written).
"""
from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from scheduler.store.bulk import bind_processors, fetch_all
from scheduler.store.engine import StoreError
from scheduler.store.models import Job, JobEvent
from scheduler.vocab import JobState

JOBS = Job.__table__
_EVENTS = JobEvent.__table__
RAW_JSON_SUFFIX = "_json"


def json_value(raw, default):
    """A JSON field as read (text on SQLite, the value itself from psycopg), decoded."""
    if raw is None or raw == "null":
        return default
    return json.loads(raw) if isinstance(raw, (str, bytes)) else raw


def raw_json(value, dialect) -> Any:
    """A JSON field's value as this dialect's reads give it (`JobRow.gpu_slices_json`,
    `.spec_json`): the text SQLAlchemy's JSON type stores, on SQLite; the value itself from
    psycopg. For a caller that keeps the rows it wrote rather than read them back."""
    return json.dumps(value) if dialect.name == "sqlite" else value


class JobRow(NamedTuple):
    """What the loop needs of an active job; `transition()` accepts it like a Job.
    `gpu_slices_json` and `spec_json` are raw JSON: use the properties."""

    id: int
    account_id: int
    state: JobState
    version: int
    slices: int
    queue_seq: float
    submitted_at: datetime
    started_at: datetime | None
    node: str | None
    gpu_slices_json: str | None
    attempts: int
    model: str
    framework: str | None
    mode: str
    spec_json: str | None
    reason: str | None
    reason_message: str | None
    finished_at: datetime | None
    failures: int
    time_limit_s: float | None

    @property
    def gpu_slices(self) -> list:
        return json_value(self.gpu_slices_json, [])

    @property
    def spec(self) -> dict:
        return json_value(self.spec_json, {})


FIELDS: tuple[str, ...] = JobRow._fields


def column_of(field: str) -> sa.Column:
    """The job column a JobRow field is read from (by name)."""
    return JOBS.c[field.removesuffix(RAW_JSON_SUFFIX)]


def _read_type(field: str):
    """The type a field is read as: its column's, or text for a `_json` field."""
    return sa.Text() if field.endswith(RAW_JSON_SUFFIX) else column_of(field).type


def _check_fields() -> None:
    for field in FIELDS:
        if field.removesuffix(RAW_JSON_SUFFIX) not in JOBS.c:
            raise ImportError(f"JobRow.{field} names no column of {JOBS.name}")
        if field.endswith(RAW_JSON_SUFFIX) and not isinstance(column_of(field).type, sa.JSON):
            raise ImportError(f"JobRow.{field}: {column_of(field).name} is not a JSON column")


_check_fields()

_SELECTED = tuple(sa.type_coerce(column_of(f), _read_type(f)).label(f) for f in FIELDS)
_J = JOBS.c
# Built once (the loop runs them every cycle; building a statement costs more than running it)
SELECT = sa.select(*_SELECTED)  # every job's JobRow fields, labelled by name (SQLAlchemy's own read)
_ACTIVE = SELECT.where(_J.state.in_([JobState.PENDING, JobState.RUNNING]))
_RUNNING = SELECT.where(_J.state == JobState.RUNNING)
_BY_IDS = SELECT.where(_J.id.in_(sa.bindparam("ids", expanding=True)))
if any(tuple(stmt.selected_columns.keys()) != FIELDS for stmt in (SELECT, _ACTIVE, _RUNNING, _BY_IDS)):
    raise ImportError("the job row's SELECTs must list JobRow's fields, in order, by name")
SQLITE_MAX_PARAMS = 900  # SQLite's limit on bound parameters (999 on old builds), with room


class _Codec(NamedTuple):
    """One dialect's reads: SQL text (SQLite's driver path) and each field's processor."""

    select: str  # SELECT <fields> FROM job
    active: str
    running: str
    decode: tuple[tuple[int, Any], ...]  # (field index, result processor), for fields that have one


def _sql(stmt, dialect) -> str:
    return stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}).string


@functools.lru_cache(maxsize=8)
def _codec(dialect) -> _Codec:
    decode = []
    for i, field in enumerate(FIELDS):
        process = _read_type(field).dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            decode.append((i, process))
    return _Codec(_sql(SELECT, dialect), _sql(_ACTIVE, dialect), _sql(_RUNNING, dialect), tuple(decode))


def _decoded(codec: _Codec, raw: list[tuple]) -> list[JobRow]:
    decode, make = codec.decode, tuple.__new__
    out = []
    for r in raw:
        r = list(r)
        for i, process in decode:
            value = r[i]
            if value is not None:
                r[i] = process(value)
        out.append(make(JobRow, r))
    return out


def _rows(result) -> list[JobRow]:
    return [JobRow._make(r) for r in result]  # the SELECT's labels are FIELDS, in order (checked above)


def running_jobs(conn: sa.Connection) -> list[JobRow]:
    """Every RUNNING job as a JobRow."""
    if conn.dialect.name == "sqlite":
        codec = _codec(conn.dialect)
        return _decoded(codec, fetch_all(conn, codec.running, ()))
    return _rows(conn.execute(_RUNNING))


def active_jobs(conn: sa.Connection, ids=None) -> list[JobRow]:
    """Active (PENDING, RUNNING) jobs as JobRows; with `ids`, those jobs whatever their state."""
    if conn.dialect.name != "sqlite":
        return _rows(conn.execute(_ACTIVE) if ids is None else conn.execute(_BY_IDS, {"ids": list(ids)}))
    codec = _codec(conn.dialect)
    if ids is None:
        return _decoded(codec, fetch_all(conn, codec.active, ()))
    ids = tuple(ids)
    out: list[JobRow] = []
    for at in range(0, len(ids), SQLITE_MAX_PARAMS):
        chunk = ids[at:at + SQLITE_MAX_PARAMS]
        where = f" WHERE {JOBS.name}.{_J.id.name} IN ({', '.join('?' * len(chunk))})"
        out += _decoded(codec, fetch_all(conn, codec.select + where, chunk))
    return out


# -- new jobs --------------------------------------------------------------------------------

@functools.cache
def _job_defaults() -> dict[str, Any]:
    """Every column of a new job at its model default (new_job fills in the rest and gives
    each row mutable values of its own)."""
    return Job(account_id=0, model="", slices=1, submitted_at=datetime(1970, 1, 1)).model_dump(exclude={"id"})


def new_job(*, account_id: int, model: str, framework: str | None, mode: str, slices: int,
            spec: dict[str, Any], at: datetime, time_limit_s: float | None = None) -> dict[str, Any]:
    """Every column of a PENDING job as submitted (queue_seq is the submission time, see
    transitions.submit_jobs), the others at their model defaults. A plain dict, inserted as
    it is (constructing a SQLModel object costs more than the INSERT: pydantic inspects
    default factories)."""
    if slices <= 0:
        raise StoreError(f"a job needs at least one slice, not {slices}")
    return {**_job_defaults(), "account_id": account_id, "model": model, "framework": framework, "mode": mode,
            "slices": slices, "spec": dict(spec), "gpu_slices": [], "state": JobState.PENDING,
            "queue_seq": at.timestamp(), "submitted_at": at, "time_limit_s": time_limit_s}


_INSERTED = tuple(c for c in JOBS.columns if c.name != "id")
_INSERT_EVENT = _EVENTS.insert()
_INSERT_RETURNING = JOBS.insert().returning(_J.id, sort_by_parameter_order=True)


def _pg_insert_statement():
    """One statement a job: the job, and its "submitted" event at its submission time; the
    job's id returned. Its text never changes, so the driver parses it once and the server
    prepares it."""
    job = (JOBS.insert().values({c.name: sa.bindparam(c.name, type_=c.type) for c in _INSERTED})
           .returning(_J.id, _J.submitted_at).cte("j"))
    return _EVENTS.insert().from_select(
        ["job_id", "at", "kind", "message"],
        sa.select(job.c.id, job.c.submitted_at, sa.bindparam("event_kind", "submitted", type_=_EVENTS.c.kind.type), sa.null()),
    ).returning(_EVENTS.c.job_id)


@functools.lru_cache(maxsize=8)
def _pg_insert(dialect) -> tuple[str, dict[str, Any], tuple]:
    """(SQL text, {the statement's own parameter: its value, encoded}, ((column name, bind
    processor or None), ...))."""
    compiled = _pg_insert_statement().compile(dialect=dialect)
    processors = bind_processors(compiled, dialect)
    own = {c.name for c in _INSERTED}
    literals = {name: processors[name](value) if name in processors else value
                for name, value in compiled.params.items() if name not in own}
    return compiled.string, literals, tuple((c.name, processors.get(c.name)) for c in _INSERTED)


def insert_jobs(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert new jobs (`new_job` rows) and their "submitted" events; their ids, in the
    rows' order. PostgreSQL: every row through the driver's pipelined `executemany`, one
    round trip. SQLite: one multi-row INSERT of the jobs, one of the events."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        ids = [r[0] for r in conn.execute(_INSERT_RETURNING, rows)]
        conn.execute(_INSERT_EVENT, [{"job_id": i, "kind": "submitted", "message": None, "at": row["submitted_at"]}
                                     for i, row in zip(ids, rows)])
        return ids
    sql, literals, columns = _pg_insert(conn.dialect)
    params = [{**literals, **{name: row[name] if process is None else process(row[name])
                              for name, process in columns}} for row in rows]
    with conn.connection.driver_connection.cursor() as cur:
        cur.executemany(sql, params, returning=True)
        ids = []
        while True:
            ids.append(cur.fetchone()[0])
            if not cur.nextset():
                break
    return ids
