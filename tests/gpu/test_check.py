"""The GPU check (tests/gpu/check.py) on this machine, which has no GPU: it refuses to run
without --allow-cpu, its CPU path runs the real end-to-end pass and says "gpu": false,
and its checks fail on what a GPU run must show (tables of facts, no GPU needed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import check
import e2e
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHECK = [sys.executable, str(HERE / "check.py")]


def _run(*args, timeout=240):
    return subprocess.run([*CHECK, *map(str, args)], check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_without_a_gpu_and_without_allow_cpu_it_fails_in_one_line_and_writes_nothing(tmp_path):
    if check.gpu_count():
        pytest.skip("this machine has a GPU: the refusal cannot happen here")
    out = tmp_path / "out"
    proc = _run(out, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "check: no GPU here (NVML finds no driver or device); --allow-cpu runs it on logical GPUs"]
    assert not out.exists()


@pytest.mark.slow  # a real `fairgpu up` with its own Ray, and two conv6 jobs: 20-60 s
def test_cpu_path_runs_the_real_pass_and_says_it_had_no_gpu(tmp_path):
    if check.gpu_count():
        pytest.skip("this machine has a GPU: run tests/gpu/run.sh instead")
    out = tmp_path / "out"
    proc = _run(out, "--allow-cpu", "--skip-bench", "--jobs-each", 1, "--timeout", 180)
    report = json.loads((out / "check.json").read_text())
    assert proc.returncode == 0, (proc.stderr, json.dumps(report["checks"], indent=1))
    assert (report["gpu"], report["nvml"], report["ok"], report["bench"]) == (
        False, "absent (no GPU)", True, "skipped (--skip-bench)")
    names = [c["name"] for c in report["checks"]]
    assert names == ["every job succeeded", "both institutions ran on slices of one GPU at once",
                     "per-account series for both institutions", "workload runs counted"]
    facts = report["e2e"]
    assert {j["institution"] for j in facts["jobs"]} == set(e2e.INSTITUTIONS)
    assert all(j["device"] == "cpu" and j["peak_memory_bytes"] > 0 for j in facts["jobs"])
    assert len({(j["node"], j["gpu"]) for j in facts["jobs"]}) == 1
    assert facts["server_exit"] == 0 and "fairgpu is up" in (out / "e2e" / "up.log").read_text()
    assert proc.stderr.strip().splitlines()[-1].startswith("check on the CPU (--allow-cpu: no NVML checks): all passed")


def test_a_failed_bench_is_reported_not_passed(tmp_path):
    args = check.parse_args([str(tmp_path), "--allow-cpu", "--bench-args", "--steps 0", "--timeout", "60"])
    facts, found = check.bench(args, gpu=False)
    assert facts["exit"] == 1 and facts["rows"] == []
    assert [(c["name"], c["ok"]) for c in found] == [("bench ran", False), ("no bench row failed", False)]
    assert "--steps must be" in found[0]["detail"]
    assert "--steps must be" in (tmp_path / "bench.stderr.txt").read_text()


def _row(model, device, speedup=None, **kw):
    row = {"section": "train", "model": model, "device": device, "samples_per_second": 10.0}
    return row | ({"gpu_speedup": speedup} if speedup else {}) | kw


BENCH_CASES = {
    "cpu: rows without errors pass": (False, 0, [_row("conv6", "cpu")], [True, True]),
    "cpu: an error row fails": (False, 0, [_row("conv6", "cpu", error="boom")], [True, False]),
    "gpu: a speedup per model passes": (
        True, 0, [_row("conv6", "cpu"), _row("conv6", "gpu", 18.7)], [True, True, True]),
    "gpu: a model without its GPU row fails": (
        True, 0, [_row("conv6", "cpu"), _row("vgg16", "cpu"), _row("conv6", "gpu", 18.7)], [True, True, False]),
    "gpu: no rows at all fail everything": (True, 1, [], [False, False, False]),
}


@pytest.mark.parametrize("case", BENCH_CASES, ids=list(BENCH_CASES))
def test_bench_checks(case):
    gpu, rc, rows, expected = BENCH_CASES[case]
    assert [c["ok"] for c in check.bench_checks(rc, rows, "", gpu)] == expected


def _facts(**over):
    """What a good GPU run's facts look like (e2e.run's shape); `over` spoils one part."""
    gpu_job = {"state": "SUCCEEDED", "error": None, "device": "gpu", "device_name": "NVIDIA H200",
               "nvml_peak_memory_bytes": 1_050_000_000, "peak_memory_bytes": 1_050_000_000}
    final = {"fairgpu_account_admissions_total": [[{"account": "inst-a"}, 1.0], [{"account": "inst-b"}, 1.0]],
             "fairgpu_workload_runs_total": [[{"model": "conv6", "device": "gpu"}, 2.0]],
             "fairgpu_node_nvml_available": [[{"hostname": "h"}, 1.0]],
             "fairgpu_gpu_memory_total_bytes": [[{"gpu": "0"}, 1.4e11]],
             "fairgpu_workload_peak_memory_bytes": [[{"model": "conv6", "device": "gpu"}, 1.05e9]]}
    facts = {"jobs_each": 1, "shared_gpu_by": ["inst-a", "inst-b"],
             "jobs": [gpu_job | {"id": 1, "institution": "inst-a"}, gpu_job | {"id": 2, "institution": "inst-b"}],
             "scrape_running": {"fairgpu_gpu_memory_used_bytes": [[{"gpu": "0"}, 2.1e9]]}, "scrape_final": final}
    for key, value in over.items():
        if key in final:
            final[key] = value
        else:
            facts[key] = value
    return facts


E2E_CASES = {
    "a good GPU run passes every check": (_facts(), True, []),
    "the same facts without a GPU skip the NVML checks": (_facts(), False, []),
    "NVML not available on the node": (_facts(fairgpu_node_nvml_available=[[{}, 0.0]]), True,
                                       ["NVML available on the node"]),
    "no NVML series at all": (_facts(fairgpu_node_nvml_available=[], fairgpu_gpu_memory_total_bytes=[],
                                     scrape_running={}), True,
                              ["NVML available on the node", "GPU memory series"]),
    "no per-job GPU memory": (
        _facts(jobs=[{"id": 1, "institution": "inst-a", "state": "SUCCEEDED", "error": None, "device": "gpu",
                      "device_name": "x", "nvml_peak_memory_bytes": None}]), True,
        ["per-job GPU memory (NVML, per process)"]),
    "jobs that ran on the CPU of a GPU machine": (
        _facts(jobs=[{"id": 1, "institution": "inst-a", "state": "SUCCEEDED", "error": None, "device": "cpu",
                      "device_name": "x", "nvml_peak_memory_bytes": None}]), True,
        ["jobs ran on the GPU", "per-job GPU memory (NVML, per process)"]),
    "one institution never shared the GPU": (_facts(shared_gpu_by=["inst-a"]), False,
                                             ["both institutions ran on slices of one GPU at once"]),
    "the server never came up": ({"error": "RuntimeError: `fairgpu up` exited 1"}, True, ["e2e ran"]),
}


@pytest.mark.parametrize("case", E2E_CASES, ids=list(E2E_CASES))
def test_e2e_checks(case):
    facts, gpu, failing = E2E_CASES[case]
    found = e2e.checks(facts, gpu=gpu)
    assert [c["name"] for c in found if not c["ok"]] == failing
    assert any("NVML" in c["name"] for c in found) == (gpu and "error" not in facts)


def test_parse_metrics_reads_labels_and_values():
    text = ('# HELP fairgpu_gpu_memory_used_bytes GPU memory in use\n'
            'fairgpu_gpu_memory_used_bytes{UUID="GPU-1",gpu="0",model_name="NVIDIA H200"} 2.1e+09\n'
            'fairgpu_capacity_slices 8.0\n')
    samples = e2e.parse_metrics(text)
    assert samples == [("fairgpu_gpu_memory_used_bytes", {"UUID": "GPU-1", "gpu": "0", "model_name": "NVIDIA H200"},
                        2.1e9), ("fairgpu_capacity_slices", {}, 8.0)]
    assert e2e.values(samples, "fairgpu_gpu_memory_used_bytes", gpu="0") == [2.1e9]
