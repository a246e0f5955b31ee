"""`fairgpu bench`: bad input exits 1 with one line; a tiny real run; the derived figures."""
from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from quota import limits
from scheduler.cli import main
from workloads import bench as wb
from workloads import report

BAD_INPUT = {
    "unknown model": (["--models", "conv6,alexnet"], "unknown model 'alexnet'"),
    "unknown framework": (["--frameworks", "jax"], "unknown framework 'jax'"),
    "unknown device": (["--devices", "tpu"], "unknown device 'tpu'"),
    "empty model list": (["--models", ","], "empty model list"),
    "zero steps": (["--steps", "0"], f"--steps must be {limits.STEPS.describe()} (got 0)"),
    "negative batch": (["--batch-size", "-4"], f"--batch-size must be {limits.BATCH_SIZE.describe()} (got -4)"),
    "zero image size": (["--image-size", "0"], f"--image-size must be {limits.IMAGE_SIZE.describe()} (got 0)"),
    "huge image size": (["--image-size", "300000000"], f"--image-size must be {limits.IMAGE_SIZE.describe()}"),
    "image size too small": (["--image-size", "20"], "at least 32"),
    "negative warm-up": (["--warmup", "-1"], f"--warmup must be {limits.WARMUP_STEPS.describe()} (got -1)"),
    "json and csv": (["--json", "--csv"], "choose one of --json and --csv"),
}


def _bench(args):
    return CliRunner().invoke(main, ["bench", *args])


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_1(case):
    args, message = BAD_INPUT[case]
    result = _bench(args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_gpu_where_none_exists(monkeypatch):
    monkeypatch.setattr(wb, "nvml_gpu_count", lambda: 0)
    result = _bench(["--devices", "cpu,gpu", "--models", "conv6"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --devices gpu: no GPU on this machine (NVML finds no driver or device)"]


def test_parse_list_keeps_canonical_order_and_accepts_all():
    assert wb.parse_list("resnet18, Conv6", ("conv6", "vgg16", "resnet18"), "model") == ("conv6", "resnet18")
    assert wb.parse_list("all", ("a", "b"), "x") == ("a", "b")


def test_plan_covers_each_row_and_the_four_latency_ways():
    cfg = wb.BenchConfig(models=("conv6", "cyclegan"), devices=("cpu",), settings=wb.QUICK)
    jobs = wb.plan(cfg)
    train = [j["spec"] for j in jobs if j["section"] == "train"]
    lat = [j["spec"] for j in jobs if j["section"] == "latency"]
    assert {(s["model"], s["framework"]) for s in train} == {
        (m, f) for m in ("conv6", "cyclegan") for f in ("pytorch", "tensorflow")}
    assert len(lat) == 2 * 4 * 2  # models x ways x batches
    assert {(s["framework"], s["execution"], s["batch_size"]) for s in lat} == {
        (fw, ex, b) for fw, ex, *_ in wb.LATENCY_WAYS for b in wb.LATENCY_BATCHES}
    gan = [s for s in train if s["model"] == "cyclegan"]
    assert all(s["batch_size"] == 1 and s["image_size"] == 64 for s in gan)
    # jobs are grouped by framework, so one worker process per framework suffices
    fws = [j["spec"]["framework"] for j in jobs]
    assert fws == sorted(fws, key=("pytorch", "tensorflow").index)


def _lat_row(fw, ex, p50, batch=1):
    return {"section": "latency", "model": "conv6", "framework": fw, "execution": ex, "device": "cpu",
            "batch_size": batch, "step_time_p50_s": p50}


def test_latency_ratios_come_only_from_measured_rows():
    rows = [_lat_row("pytorch", "eager", 0.010), _lat_row("pytorch", "compiled", 0.008),
            _lat_row("tensorflow", "eager", 0.012), _lat_row("tensorflow", "compiled", 0.006),
            _lat_row("tensorflow", "eager", 0.050, batch=32)]  # no PyTorch partner at batch 32
    table = wb.latency_table(rows)
    b1, b32 = table
    assert b1["tf_over_pt_eager"] == pytest.approx(1.2)
    assert b1["tf_over_pt_compiled"] == pytest.approx(0.75)
    assert b1["xla_over_pt_eager"] == pytest.approx(0.6)
    assert b32["tf_over_pt_eager"] is None and b32["xla_over_pt_eager"] is None
    wb.add_latency_ratios(rows)
    assert rows[2]["tf_over_pytorch_ratio"] == pytest.approx(1.2)
    assert "tf_over_pytorch_ratio" not in rows[4]


def test_gpu_speedup_needs_both_devices():
    base = {"section": "train", "model": "conv6", "framework": "pytorch", "mode": "train"}
    rows = [base | {"device": "cpu", "samples_per_second": 10.0},
            base | {"device": "gpu", "samples_per_second": 250.0},
            base | {"framework": "tensorflow", "device": "gpu", "samples_per_second": 90.0}]
    wb.training_rows(rows)
    assert rows[1]["gpu_speedup"] == pytest.approx(25.0)
    assert "gpu_speedup" not in rows[2] and "gpu_speedup" not in rows[0]


def test_tiny_real_run_json_csv_and_plot(tmp_path):
    png = tmp_path / "bench.png"
    result = _bench(["--models", "conv6", "--frameworks", "pytorch", "--devices", "cpu", "--no-latency",
                     "--steps", "2", "--warmup", "1", "--batch-size", "4", "--json", "--plot", str(png)])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 1
    row = rows[0]
    for key in ("model", "framework", "device", "mode", "samples_per_second", "step_time_p50_s",
                "peak_memory_bytes", "params"):
        assert key in row
    assert (row["model"], row["framework"], row["device"], row["mode"]) == ("conv6", "pytorch", "cpu", "train")
    assert row["params"] == 2_262_602 and row["samples_per_second"] > 0 and row["batch_size"] == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    parsed = list(csv.DictReader(io.StringIO(report.to_csv(rows))))
    assert parsed[0]["model"] == "conv6" and float(parsed[0]["samples_per_second"]) == row["samples_per_second"]


def test_a_failing_row_is_reported_not_hidden():
    jobs = [{"section": "train", "spec": {"model": "conv6", "framework": "pytorch", "mode": "train",
                                          "steps": 1, "warmup_steps": 0, "batch_size": 2, "device": "cpu",
                                          "data_dir": "/nonexistent/cifar", "execution": "default"}}]
    rows = wb.run(jobs)
    assert len(rows) == 1 and "no CIFAR-10 python batches" in rows[0]["error"]
