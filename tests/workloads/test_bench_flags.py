"""`fairgpu bench --threads/--repeats` and the load warning: ranges, medians and spread,
the thread count reaching the framework, and rows measured under load marked as such."""
from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner

from scheduler.cli import main
from scheduler.cli.bench import REPEATS_MAX, THREADS_MAX
from workloads import bench as wb
from workloads import report

TINY = ["--models", "conv6", "--frameworks", "pytorch", "--devices", "cpu", "--no-latency",
        "--steps", "1", "--warmup", "0", "--batch-size", "2"]

BAD_INPUT = {
    "zero threads": (["--threads", "0"], f"--threads must be an integer 1 to {THREADS_MAX:,} threads (got 0)"),
    "too many threads": (["--threads", "5000"], "--threads must be an integer 1 to"),
    "zero repeats": (["--repeats", "0"], f"--repeats must be an integer 1 to {REPEATS_MAX} runs (got 0)"),
    "negative repeats": (["--repeats", "-3"], "(got -3)"),
    "too many repeats": (["--repeats", str(REPEATS_MAX + 1)], f"(got {REPEATS_MAX + 1})"),
}


def _bench(args):
    return CliRunner().invoke(main, ["bench", *args])


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_threads_or_repeats_is_one_line_exit_1_and_runs_nothing(case):
    args, message = BAD_INPUT[case]
    result = _bench([*TINY, *args])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def _ok(sps, p50, peak=100):
    return {"result": {"model": "conv6", "samples_per_second": sps, "step_time_p50_s": p50,
                       "step_time_p95_s": p50, "step_time_mean_s": p50, "peak_memory_bytes": peak,
                       "losses": [1.0]}}


JOB = {"section": "train", "threads": 2, "spec": {"model": "conv6", "framework": "pytorch", "mode": "train",
                                                  "execution": "default", "device": "cpu", "batch_size": 4}}

MERGES = {
    "one run: its figures, a spread of one point": (
        [_ok(10.0, 0.4)], {"samples_per_second": 10.0, "samples_per_second_spread": [10.0, 10.0], "repeats": 1}),
    "three runs: median and min-max, the largest peak": (
        [_ok(10.0, 0.4, 100), _ok(30.0, 0.1, 300), _ok(12.0, 0.3, 200)],
        {"samples_per_second": 12.0, "samples_per_second_spread": [10.0, 30.0],
         "step_time_p50_s": 0.3, "step_time_p50_s_spread": [0.1, 0.4], "peak_memory_bytes": 300, "repeats": 3}),
    "two runs: the median is their mean": (
        [_ok(10.0, 0.4), _ok(20.0, 0.2)], {"samples_per_second": 15.0, "samples_per_second_spread": [10.0, 20.0]}),
    "a failed run makes an error row": (
        [_ok(10.0, 0.4), {"error": "RuntimeError: out of memory"}],
        {"error": "RuntimeError: out of memory", "threads": 2, "samples_per_second": None}),
}


@pytest.mark.parametrize("case", MERGES, ids=list(MERGES))
def test_merge_runs(case):
    msgs, expected = MERGES[case]
    row = wb.merge_runs(JOB, msgs)
    for key, value in expected.items():
        assert row.get(key) == pytest.approx(value), key
    assert "losses" not in row and row["section"] == "train"


def test_load_watch_keeps_the_highest_load_since_the_last_take():
    loads = iter([0.5, 3.0, 1.0, 0.2, 0.1, 0.1])  # start, sample, take | sample, take | exit
    with wb.LoadWatch(lambda: (next(loads), 0.0, 0.0), every_s=3600) as watch:
        watch._sample()  # what the polling thread does every every_s
        assert watch.take() == 3.0  # the peak between two takes, not the last value
        watch._sample()
        assert watch.take() == 1.0  # the load when the last take happened still counts


def test_plan_carries_threads_and_repeats_to_every_job():
    cfg = wb.BenchConfig(models=("conv6", "vgg16"), frameworks=("pytorch",), devices=("cpu",), threads=3, repeats=4)
    jobs = wb.plan(cfg)
    assert jobs and {(j["threads"], j["repeats"]) for j in jobs} == {(3, 4)}
    assert {(j["threads"]) for j in wb.plan(wb.BenchConfig(models=("conv6",)))} == {wb.default_threads()}


def test_a_row_measured_under_load_is_marked_once_for_all_its_repeats():
    # a spec the worker refuses before any framework loads: the row is fast, and still watched
    spec = dict(JOB["spec"], model="alexnet", steps=1, warmup_steps=0)
    jobs = [{"section": "train", "repeats": 2, "threads": None, "spec": spec}]
    busy = itertools.chain([0.3], itertools.repeat(7.5))
    [row] = wb.run(jobs, loadavg=lambda: (next(busy), 0.0, 0.0), cores=2)
    assert "unknown model 'alexnet'" in row["error"]
    assert (row["cores"], row["load"], row["loaded"]) == (2, 7.5, True)
    [warning] = wb.load_warnings([row])
    assert "load average 7.5 above 2 cores" in warning and "conv6" not in warning and "alexnet" in warning


def test_rows_below_the_cores_give_no_warning():
    rows = [{"section": "train", "model": "conv6", "framework": "pytorch", "device": "cpu",
             "cores": 4, "load": 3.9, "loaded": False}]
    assert wb.load_warnings(rows) == []


def test_cli_threads_reach_the_framework_and_repeats_give_median_and_spread():
    result = _bench([*TINY, "--threads", "1", "--repeats", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["threads"] == 1  # torch.get_num_threads() inside the worker
    assert row["repeats"] == 2 and row["cores"] == wb.default_threads()
    lo, hi = row["samples_per_second_spread"]
    assert lo <= row["samples_per_second"] <= hi
    assert isinstance(row["loaded"], bool) and row["load"] >= 0
    # what the table says about the same run (rendered from its rows: no second worker)
    from rich.console import Console

    console = Console(width=200, record=True)
    report.render([row], console, threads=1, cores=row["cores"], repeats=2)
    text = console.export_text()
    assert f"1 thread of {row['cores']} cores" in text and "median of 2 runs, min-max" in text
    assert f"({lo:,.1f}-{hi:,.1f})" in text
