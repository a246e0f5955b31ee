"""Where forecast data comes from: the shipped data set, a CSV, or the jobs database.

- `gpu_memory_dataset()`: gpu_memory_by_year.csv beside this module (year, gpu, memory_gib,
  source): the largest memory of NVIDIA's data-centre flagship GPU by launch year, each row
  with its source (docs/forecast.md lists them). Loaded with importlib.resources.
- `read_series(path, x, y)`: two columns of a CSV with a header. x may be numbers or ISO
  dates/times (then days since the first); rows with an empty y are skipped.
- `job_series(session, metric, bucket_s)`: recorded jobs bucketed by submit time (days
  since the first job, bucket midpoints). metric "memory": the largest peak GPU memory
  (GiB) of the bucket's jobs (`result["peak_memory_bytes"]`); "slices": the average
  number of slices the bucket's jobs kept busy, sum(slices x run seconds) / bucket_s.
Each returns (xs, ys, x_label, y_label) or raises ForecastError with one line.
"""
from __future__ import annotations

import csv
from datetime import datetime
from importlib import resources
from pathlib import Path

from scheduler.forecast.fit import ForecastError

GIB = 1024.0 ** 3


def gpu_memory_rows() -> list[dict]:
    text = resources.files("scheduler.forecast").joinpath("gpu_memory_by_year.csv").read_text()
    return list(csv.DictReader(text.splitlines()))


def gpu_memory_dataset():
    rows = gpu_memory_rows()
    return [float(r["year"]) for r in rows], [float(r["memory_gib"]) for r in rows], "year", "memory_gib"


def _parse_x(value: str):
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def read_series(path: str | Path, x: str, y: str):
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for col in (x, y):
                if col not in header:
                    raise ForecastError(f"{path}: no column {col!r} (columns: {', '.join(header) or 'none'})")
            xs_raw, ys = [], []
            for line, row in enumerate(reader, start=2):
                if row.get(y) in (None, ""):
                    continue
                xv = _parse_x(row.get(x) or "")
                try:
                    yv = float(row[y])
                except ValueError:
                    raise ForecastError(f"{path}:{line}: {y} is not a number ({row[y]!r})") from None
                if xv is None:
                    raise ForecastError(f"{path}:{line}: {x} is neither a number nor a date ({row.get(x)!r})")
                xs_raw.append(xv)
                ys.append(yv)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ForecastError(f"cannot read {path}: {exc}") from None
    kinds = {isinstance(v, datetime) for v in xs_raw}
    if len(kinds) > 1:
        raise ForecastError(f"{path}: {x} mixes numbers and dates")
    if kinds == {True}:
        try:
            t0 = min(xs_raw)
            xs = [(v - t0).total_seconds() / 86400.0 for v in xs_raw]
        except TypeError:
            raise ForecastError(f"{path}: {x} mixes dates with and without a time zone") from None
        return xs, ys, f"days since {t0.date().isoformat()}", y
    return [float(v) for v in xs_raw], ys, x, y


def job_series(session, metric: str = "slices", bucket_s: float = 86400.0):
    from sqlmodel import select

    from scheduler.store import Job

    if metric not in ("memory", "slices"):
        raise ForecastError(f"metric is memory or slices, not {metric!r}")
    jobs = session.exec(select(Job)).all()
    if not jobs:
        raise ForecastError("the database has no recorded jobs")
    t0 = min(j.submitted_at for j in jobs)
    buckets: dict[int, float] = {}
    for j in jobs:
        b = int((j.submitted_at - t0).total_seconds() // bucket_s)
        if metric == "memory":
            peak = (j.result or {}).get("peak_memory_bytes")
            if peak is None:
                continue
            buckets[b] = max(buckets.get(b, 0.0), float(peak) / GIB)
        else:
            if j.started_at is None or j.finished_at is None:
                continue
            run = (j.finished_at - j.started_at).total_seconds()
            buckets[b] = buckets.get(b, 0.0) + j.slices * run / bucket_s
    if not buckets:
        what = "peak memory" if metric == "memory" else "finished jobs with start and end times"
        raise ForecastError(f"the database has no {what} to fit")
    days = bucket_s / 86400.0
    xs = [(b + 0.5) * days for b in sorted(buckets)]
    ys = [buckets[b] for b in sorted(buckets)]
    label = "peak_memory_gib" if metric == "memory" else "slices_busy"
    return xs, ys, f"days since {t0.date().isoformat()}", label
