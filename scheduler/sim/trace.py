"""The trace model and fairgpu's own trace formats (CSV and JSON).

A trace is a list of jobs: id, account (the institution or a leaf under it), submit time
(seconds from the trace's start), duration when run alone (seconds) and slices. It may
carry the account tree (weights, guarantees, caps) and the cluster; a reader that cannot
know them leaves them None and the caller supplies them.

fairgpu CSV: header `id,account,submit_s,duration_s,slices` (`gpus` may replace `slices`:
it is multiplied by the cluster's slices per GPU). JSON: either a list of such objects or
{"accounts": [{"name", "weight", "parent", "guaranteed", "cap"}], "nodes": [{"name",
"gpus", "slices_per_gpu", "gpu_type"}], "jobs": [...]}.

Invariants: jobs are sorted by (submit_s, id); durations > 0; slices >= 1; a malformed
row raises TraceError naming the file and the line.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from quota import AccountSpec, AccountTree, Capacity, NodeCapacity


class TraceError(ValueError):
    """A trace that cannot be read; the message names the file and, where it can, the line."""


@dataclass(frozen=True)
class TraceJob:
    id: str
    account: str
    submit_s: float
    duration_s: float
    slices: int


@dataclass
class Trace:
    jobs: list[TraceJob]
    accounts: list[AccountSpec] | None = None
    capacity: Capacity | None = None
    name: str = "trace"
    skipped: dict[str, int] = field(default_factory=dict)  # why rows were left out, and how many

    def __post_init__(self) -> None:
        self.jobs.sort(key=lambda j: (j.submit_s, j.id))

    def institutions(self) -> list[str]:
        return sorted({j.account for j in self.jobs})

    def default_tree(self) -> AccountTree:
        """The trace's accounts, or one account of weight 1 per account seen in the jobs."""
        if self.accounts:
            return AccountTree.build(self.accounts)
        return AccountTree.build(AccountSpec(a, 1.0) for a in self.institutions())


def gpus_to_slices(gpus: float, slices_per_gpu: int) -> int:
    """A GPU count (maybe fractional) as a slice request Ray can start: under one GPU, the
    slices rounded up; one GPU or more, whole GPUs rounded up."""
    if gpus <= 0:
        return 0
    if gpus < 1:
        return max(1, min(slices_per_gpu, math.ceil(gpus * slices_per_gpu - 1e-9)))
    return math.ceil(gpus - 1e-9) * slices_per_gpu


def _num(value, what: str, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {what} is not a number ({value!r})") from None
    if not math.isfinite(x):
        raise TraceError(f"{where}: {what} is not finite ({value!r})")
    return x


def job_from_row(row: dict, where: str, slices_per_gpu: int) -> TraceJob:
    for key in ("id", "account", "submit_s", "duration_s"):
        if row.get(key) in (None, ""):
            raise TraceError(f"{where}: missing {key}")
    if row.get("slices") not in (None, ""):
        slices = _num(row["slices"], "slices", where)
        if slices != int(slices):
            raise TraceError(f"{where}: slices must be a whole number ({row['slices']!r})")
        slices = int(slices)
    elif row.get("gpus") not in (None, ""):
        slices = gpus_to_slices(_num(row["gpus"], "gpus", where), slices_per_gpu)
    else:
        raise TraceError(f"{where}: missing slices (or gpus)")
    duration = _num(row["duration_s"], "duration_s", where)
    if slices < 1:
        raise TraceError(f"{where}: slices must be >= 1")
    if duration <= 0:
        raise TraceError(f"{where}: duration_s must be > 0")
    return TraceJob(str(row["id"]), str(row["account"]), _num(row["submit_s"], "submit_s", where), duration, slices)


def read_csv(path: str | Path, slices_per_gpu: int = 4) -> Trace:
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            jobs = [job_from_row(row, f"{path}:{i}", slices_per_gpu) for i, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from None
    return Trace(jobs, name=path.stem)


def read_json(path: str | Path, slices_per_gpu: int = 4) -> Trace:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from None
    accounts = capacity = None
    if isinstance(data, dict):
        try:
            if data.get("accounts"):
                accounts = [AccountSpec(a["name"], float(a.get("weight", 1.0)), a.get("parent"),
                                        int(a.get("guaranteed", 0)), a.get("cap")) for a in data["accounts"]]
            if data.get("nodes"):
                capacity = Capacity(tuple(NodeCapacity(n["name"], int(n["gpus"]), int(n["slices_per_gpu"]),
                                                       n.get("gpu_type", "T4")) for n in data["nodes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(f"{path}: bad accounts or nodes: {exc}") from None
        rows = data.get("jobs")
    else:
        rows = data
    if not isinstance(rows, list):
        raise TraceError(f"{path}: expected a list of jobs")
    jobs = [job_from_row(r if isinstance(r, dict) else {}, f"{path}: job {i}", slices_per_gpu)
            for i, r in enumerate(rows)]
    return Trace(jobs, accounts, capacity, name=path.stem)


def write_csv(trace: Trace, path: str | Path) -> None:
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "account", "submit_s", "duration_s", "slices"])
        for j in trace.jobs:
            w.writerow([j.id, j.account, repr(j.submit_s), repr(j.duration_s), j.slices])


def write_json(trace: Trace, path: str | Path) -> None:
    data: dict = {"jobs": [j.__dict__ for j in trace.jobs]}
    if trace.accounts:
        data["accounts"] = [{"name": a.name, "weight": a.weight, "parent": a.parent, "guaranteed": a.guaranteed,
                             "cap": a.cap} for a in trace.accounts]
    if trace.capacity:
        data["nodes"] = [n.__dict__ for n in trace.capacity.nodes]
    Path(path).write_text(json.dumps(data))
