"""Trace readers on small files written in each real format, and fairgpu's own round trip."""
from __future__ import annotations

import csv
import json

import pytest

from scheduler.sim.readers import PAI_JOB_COLUMNS, PAI_TASK_COLUMNS, read_pai, read_philly
from scheduler.sim.synthetic import synthetic
from scheduler.sim.trace import TraceError, read_csv, read_json, write_csv, write_json


def test_fairgpu_csv_and_json_round_trip(tmp_path):
    trace = synthetic(jobs=200, days=1, institutions=5, gpus=16, seed=3)
    write_csv(trace, tmp_path / "t.csv")
    write_json(trace, tmp_path / "t.json")
    back_csv, back_json = read_csv(tmp_path / "t.csv"), read_json(tmp_path / "t.json")
    assert back_csv.jobs == trace.jobs
    assert back_json.jobs == trace.jobs
    assert back_json.accounts == trace.accounts
    assert back_json.capacity == trace.capacity


def test_csv_gpus_column_becomes_slices_and_bad_rows_name_the_line(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id,account,submit_s,duration_s,gpus\na,x,0,10,0.5\nb,x,5,10,2\n")
    jobs = read_csv(p, slices_per_gpu=4).jobs
    assert [(j.id, j.slices) for j in jobs] == [("a", 2), ("b", 8)]
    p.write_text("id,account,submit_s,duration_s,slices\na,x,0,10,1\nb,x,zero,10,1\n")
    with pytest.raises(TraceError, match=r"t.csv:3: submit_s is not a number"):
        read_csv(p)
    p.write_text("id,account,submit_s,duration_s,slices\na,x,0,-1,1\n")
    with pytest.raises(TraceError, match="duration_s must be > 0"):
        read_csv(p)


def philly_job(jobid, vc, submitted, attempts, status="Pass"):
    return {"status": status, "vc": vc, "jobid": jobid, "user": "u1", "submitted_time": submitted,
            "attempts": [{"start_time": s, "end_time": e, "detail": [{"ip": f"m{i}", "gpus": [f"gpu{g}" for g in range(n)]}
                                                                    for i, n in enumerate(gpus)]}
                         for s, e, gpus in attempts]}


def test_philly_cluster_job_log(tmp_path):
    log = [
        philly_job("application_1", "vc-a", "2017-10-03 02:25:40",
                   [("2017-10-03 02:25:41", "2017-10-03 03:25:41", [2])]),
        # two attempts: run time sums, GPUs are the most any attempt held (4 + 4 over two machines)
        philly_job("application_2", "vc-b", "2017-10-03 02:30:40",
                   [("2017-10-03 02:31:00", "2017-10-03 02:41:00", [4]),
                    ("2017-10-03 03:00:00", "2017-10-03 03:20:00", [4, 4])], status="Killed"),
        philly_job("application_3", "vc-b", "2017-10-03 02:35:00", [("None", "None", [1])], status="Failed"),
    ]
    p = tmp_path / "cluster_job_log"
    p.write_text(json.dumps(log))
    trace = read_philly(p, slices_per_gpu=4)
    assert [(j.id, j.account, j.submit_s, j.duration_s, j.slices) for j in trace.jobs] == [
        ("application_1", "vc-a", 0.0, 3600.0, 8),
        ("application_2", "vc-b", 300.0, 1800.0, 32),
    ]
    assert trace.skipped == {"no complete attempt": 1}
    assert trace.institutions() == ["vc-a", "vc-b"]


def write_rows(path, rows, header=None):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)


@pytest.mark.parametrize("with_header", [False, True])
def test_pai_2020_tables(tmp_path, with_header):
    # the released files have no header row (a header is accepted too)
    tasks = [
        ["job1", "worker", "1", "Terminated", "1000", "4600", "600", "29.3", "50", "V100"],  # half a GPU
        ["job2", "worker", "4", "Terminated", "1500", "2500", "600", "29.3", "100", "T4"],  # 4 GPUs
        ["job2", "ps", "1", "Terminated", "1500", "2500", "600", "29.3", "", ""],  # CPU only
        ["job3", "worker", "1", "Failed", "3000", "3100", "600", "29.3", "25", "MISC"],
    ]
    jobs = [["job1", "inst1", "alice", "Terminated", "900", "4600"],
            ["job2", "inst2", "bob", "Terminated", "1400", "2500"],
            ["job3", "inst3", "alice", "Failed", "3000", "3100"]]
    groups = [["inst1", "alice", "V100", "g-nlp", "bert"], ["inst2", "bob", "T4", "g-cv", "resnet"],
              ["inst3", "alice", "MISC", "g-nlp", "bert"]]
    write_rows(tmp_path / "pai_task_table.csv", tasks, PAI_TASK_COLUMNS if with_header else None)
    write_rows(tmp_path / "pai_job_table.csv", jobs, PAI_JOB_COLUMNS if with_header else None)
    write_rows(tmp_path / "pai_group_tag_table.csv", groups,
               ("inst_id", "user", "gpu_type_spec", "group", "workload") if with_header else None)
    by_user = read_pai(tmp_path / "pai_task_table.csv", tmp_path / "pai_job_table.csv")
    assert [(j.id, j.account, j.submit_s, j.duration_s, j.slices) for j in by_user.jobs] == [
        ("job1/worker", "alice", 0.0, 3600.0, 2),
        ("job2/worker", "bob", 500.0, 1000.0, 16),
        ("job3/worker", "alice", 2100.0, 100.0, 1),
    ]
    assert by_user.skipped == {"no plan_gpu": 1}
    by_group = read_pai(tmp_path / "pai_task_table.csv", tmp_path / "pai_job_table.csv",
                        tmp_path / "pai_group_tag_table.csv", institution="group")
    assert [j.account for j in by_group.jobs] == ["g-nlp", "g-cv", "g-nlp"]


def test_pai_short_row_is_an_error_naming_the_line(tmp_path):
    write_rows(tmp_path / "t.csv", [["job1", "worker", "1"]])
    write_rows(tmp_path / "j.csv", [["job1", "inst1", "alice", "Terminated", "900", "4600"]])
    with pytest.raises(TraceError, match=r"t.csv:1: expected 10 columns"):
        read_pai(tmp_path / "t.csv", tmp_path / "j.csv", institution="user")
    with pytest.raises(TraceError, match="needs the job table"):
        read_pai(tmp_path / "t.csv", None)


def test_synthetic_is_seeded_and_skewed():
    a, b, c = synthetic(jobs=2000, days=2, seed=7), synthetic(jobs=2000, days=2, seed=7), synthetic(jobs=2000, days=2, seed=8)
    assert a.jobs == b.jobs and a.jobs != c.jobs
    counts = {}
    for j in a.jobs:
        counts[j.account] = counts.get(j.account, 0) + 1
    assert counts["inst000"] > 5 * counts.get("inst050", 1)  # Zipf: the largest dwarfs the middle
    load = sum(j.slices * j.duration_s for j in a.jobs) / (a.capacity.total_slices * 2 * 86400)
    assert load == pytest.approx(0.9, rel=0.02)
    hours = [(j.submit_s % 86400) // 3600 for j in a.jobs]
    afternoon = sum(1 for h in hours if 12 <= h < 18)
    night = sum(1 for h in hours if 0 <= h < 6)
    assert afternoon > 2 * night  # diurnal arrivals
    durations = sorted(j.duration_s for j in a.jobs)
    assert durations[-1] > 20 * durations[len(durations) // 2]  # heavy tail
