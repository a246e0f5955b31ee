"""Readers for public GPU-cluster traces, into fairgpu's Trace.

Microsoft Philly (github.com/msr-fiddle/philly-traces, `cluster_job_log`): one JSON list
of jobs, each {"jobid", "vc", "user", "status", "submitted_time", "attempts": [{"start_time",
"end_time", "detail": [{"ip", "gpus": [...]}]}]}, times as "%Y-%m-%d %H:%M:%S" (or "None").
- institution = `vc` (the virtual cluster is the tenant);
- slices = the most GPUs any attempt held (sum of len(gpus) over `detail`) x slices per GPU;
- duration = the summed run time of the attempts (what the job used the GPUs for);
- submit = `submitted_time`, relative to the earliest in the file.
Jobs with no complete attempt or no GPU are skipped and counted.

Alibaba PAI GPU 2020 (github.com/alibaba/clusterdata, cluster-trace-gpu-v2020): CSV files
without a header row (a header row is accepted too):
- pai_task_table: job_name, task_name, inst_num, status, start_time, end_time, plan_cpu,
  plan_mem, plan_gpu, gpu_type; `plan_gpu` is a percentage of one GPU per instance
  (50 = half a GPU), times are seconds;
- pai_job_table: job_name, inst_id, user, status, start_time, end_time (start_time is
  when the job was submitted);
- pai_group_tag_table: inst_id, user, gpu_type_spec, group, workload.
One task is one job: GPUs = inst_num x plan_gpu / 100, made a shape Ray can start (a
fraction of one GPU in slices rounded up, else whole GPUs rounded up). institution = the
job's `user` (default) or `group` (needs the group tag table). Tasks without plan_gpu,
start or end time are skipped and counted.
"""
from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from scheduler.sim.trace import Trace, TraceError, TraceJob, gpus_to_slices

PHILLY_TIME = "%Y-%m-%d %H:%M:%S"
PAI_TASK_COLUMNS = ("job_name", "task_name", "inst_num", "status", "start_time", "end_time", "plan_cpu",
                    "plan_mem", "plan_gpu", "gpu_type")
PAI_JOB_COLUMNS = ("job_name", "inst_id", "user", "status", "start_time", "end_time")
PAI_GROUP_COLUMNS = ("inst_id", "user", "gpu_type_spec", "group", "workload")


def _philly_time(value) -> float | None:
    if value in (None, "", "None"):
        return None
    try:
        return datetime.strptime(str(value), PHILLY_TIME).timestamp()
    except ValueError:
        return None


def read_philly(path: str | Path, slices_per_gpu: int = 4) -> Trace:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, list):
        raise TraceError(f"{path}: a Philly cluster_job_log is a JSON list of jobs")
    skipped: dict[str, int] = {}
    rows = []
    for i, job in enumerate(data):
        if not isinstance(job, dict) or "jobid" not in job or "vc" not in job:
            raise TraceError(f"{path}: job {i} has no jobid or vc")
        submit = _philly_time(job.get("submitted_time"))
        gpus, run = 0, 0.0
        for a in job.get("attempts") or []:
            start, end = _philly_time(a.get("start_time")), _philly_time(a.get("end_time"))
            if start is None or end is None or end < start:
                continue
            run += end - start
            gpus = max(gpus, sum(len(d.get("gpus") or []) for d in a.get("detail") or []))
        why = "no submit time" if submit is None else "no complete attempt" if run <= 0 else "no GPU" if not gpus else None
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        rows.append((str(job["jobid"]), str(job["vc"]), submit, run, gpus * slices_per_gpu))
    t0 = min((r[2] for r in rows), default=0.0)
    jobs = [TraceJob(jid, vc, s - t0, run, k) for jid, vc, s, run, k in rows]
    return Trace(jobs, name=path.stem, skipped=skipped)


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict]:
    try:
        with path.open(newline="") as f:
            raw = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(f"cannot read {path}: {exc}") from None
    if raw and raw[0] and raw[0][0] == columns[0]:
        header, raw = raw[0], raw[1:]
        missing = [c for c in columns if c not in header]
        if missing:
            raise TraceError(f"{path}: missing columns {', '.join(missing)}")
        return [dict(zip(header, r)) for r in raw if r]
    out = []
    for i, r in enumerate(raw, start=1):
        if not r:
            continue
        if len(r) < len(columns):
            raise TraceError(f"{path}:{i}: expected {len(columns)} columns ({', '.join(columns)}), got {len(r)}")
        out.append(dict(zip(columns, r)))
    return out


def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def read_pai(task_table: str | Path, job_table: str | Path | None = None, group_table: str | Path | None = None,
             institution: str = "user", slices_per_gpu: int = 4) -> Trace:
    if institution not in ("user", "group"):
        raise TraceError(f"PAI institution is user or group, not {institution!r}")
    if job_table is None:
        raise TraceError("a PAI trace needs the job table (pai_job_table.csv) for each task's user and submit time")
    if institution == "group" and group_table is None:
        raise TraceError("PAI institution=group needs the group tag table (pai_group_tag_table.csv)")
    task_table = Path(task_table)
    jobs_by_name = {r["job_name"]: r for r in _csv_rows(Path(job_table), PAI_JOB_COLUMNS)}
    group_of = {}
    if group_table:
        group_of = {r["inst_id"]: r["group"] for r in _csv_rows(Path(group_table), PAI_GROUP_COLUMNS)}
    skipped: dict[str, int] = {}
    rows = []

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    for r in _csv_rows(task_table, PAI_TASK_COLUMNS):
        plan_gpu, inst = _float(r["plan_gpu"]), _float(r["inst_num"]) or 1.0
        start, end = _float(r["start_time"]), _float(r["end_time"])
        if not plan_gpu:
            skip("no plan_gpu")
            continue
        if start is None or end is None or end <= start:
            skip("no start or end time")
            continue
        job = jobs_by_name.get(r["job_name"])
        if institution == "user":
            who = job["user"] if job else None
        else:
            who = group_of.get(job["inst_id"]) if job else None
        if not who:
            skip(f"no {institution}" if job else "task without a job row")
            continue
        submit = _float(job.get("start_time")) if job else None
        submit = start if submit is None else min(submit, start)
        slices = gpus_to_slices(inst * plan_gpu / 100.0, slices_per_gpu)
        rows.append((f"{r['job_name']}/{r['task_name']}", who, submit, end - start, slices))
    t0 = min((row[2] for row in rows), default=0.0)
    jobs = [TraceJob(i, who, s - t0, d, k) for i, who, s, d, k in rows]
    return Trace(jobs, name=task_table.stem, skipped=skipped)
