"""PyTorch workloads: the models, train and infer through the runner, the learnable task."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from workloads import registry
from workloads import torch_models as tm
from workloads.runner import RESULT_KEYS, WorkloadSpec, run_workload


@pytest.mark.parametrize("model", registry.MODELS)
def test_param_count_is_the_reference(model):
    assert tm.count_params(tm.build(model)) == registry.REFERENCE_PARAMS[model]


def test_cyclegan_parts_match_the_reference_code():
    gan = tm.CycleGAN()
    assert tm.count_params(gan.G_A) == tm.count_params(gan.G_B) == registry.CYCLEGAN_GENERATOR_PARAMS
    assert tm.count_params(gan.D_A) == tm.count_params(gan.D_B) == registry.CYCLEGAN_DISCRIMINATOR_PARAMS
    x = torch.randn(1, 3, 64, 64)
    assert gan.G_A(x).shape == x.shape
    assert gan.D_A(x).shape == (1, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    assert torch.all(gan.G_A(x).abs() <= 1)  # tanh output


@pytest.mark.parametrize("model", registry.MODELS)
@pytest.mark.parametrize("mode", registry.MODES)
def test_runs_a_few_steps_and_the_record_is_complete(model, mode, tiny):
    result = run_workload(tiny(model, "pytorch", mode), memory_fraction=0.5)
    assert tuple(result) == RESULT_KEYS
    assert result["params"] == registry.REFERENCE_PARAMS[model]
    assert (result["device"], result["framework"], result["mode"]) == ("cpu", "pytorch", mode)
    assert result["framework_version"] == torch.__version__
    assert result["threads"] == torch.get_num_threads() >= 1
    assert result["samples_per_second"] > 0
    assert 0 < result["step_time_p50_s"] <= result["step_time_p95_s"]
    assert result["peak_memory_bytes"] == result["rss_peak_bytes"] > 50 * 2**20
    assert result["framework_peak_memory_bytes"] is None and result["nvml_peak_memory_bytes"] is None
    assert result["memory_fraction"] == 0.5  # recorded; no effect on a CPU
    if mode == "train":
        assert len(result["losses"]) == 3 and all(math.isfinite(x) for x in result["losses"])
        assert result["loss_first"] == result["losses"][0] and result["loss_last"] == result["losses"][-1]
    else:
        assert result["loss_first"] is None and result["loss_last"] is None
    import json

    json.dumps(result)


def test_loss_falls_on_the_learnable_task():
    result = run_workload(WorkloadSpec(model="conv6", framework="pytorch", steps=40, warmup_steps=0,
                                       batch_size=16, device="cpu", seed=0))
    losses = result["losses"]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 2.0  # chance level for 10 classes is ln 10 = 2.30
    assert last < 0.6 * first, losses


def test_trains_on_real_format_files(cifar_dir, horse2zebra_dir, tiny):
    r = run_workload(tiny("conv6", "pytorch", data_dir=str(cifar_dir)))
    assert r["data"] == str(cifar_dir) and math.isfinite(r["loss_last"])
    r = run_workload(tiny("cyclegan", "pytorch", data_dir=str(horse2zebra_dir)))
    assert r["image_size"] == 32 and math.isfinite(r["loss_last"])


def test_gpu_request_runs_on_gpu_or_says_there_is_none(tiny):
    spec = tiny("conv6", "pytorch", "infer", device="gpu")
    if torch.cuda.is_available():
        r = run_workload(spec, memory_fraction=0.5)
        assert r["device"] == "gpu" and r["framework_peak_memory_bytes"] > 0
    else:
        with pytest.raises(RuntimeError, match="PyTorch sees no CUDA GPU"):
            run_workload(spec)


def test_torch_compile_inference_runs(tiny):
    r = run_workload(tiny("conv6", "pytorch", "infer", execution="compiled", batch_size=1))
    assert r["execution"] == "compiled" and r["step_time_p50_s"] > 0
    assert r["warmup_time_s"] > r["step_time_p50_s"]  # compilation is in the warm-up, not the figures
