"""TensorFlow/Keras workloads, and the same-architecture check against PyTorch."""
from __future__ import annotations

import math

import pytest

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")

from workloads import registry, tf_models, torch_models
from workloads.runner import RESULT_KEYS, WorkloadSpec, run_workload


def _torch_shapes_as_keras(module) -> list[tuple]:
    """Each trainable tensor's shape, converted to Keras' layout, in registration order."""
    shapes = []
    for name, mod in module.named_modules():
        for p in mod.parameters(recurse=False):
            s = tuple(p.shape)
            if isinstance(mod, (torch.nn.ConvTranspose2d, torch.nn.Conv2d)) and len(s) == 4:
                s = (s[2], s[3], s[1], s[0])
            elif isinstance(mod, torch.nn.Linear) and len(s) == 2:
                s = (s[1], s[0])
            shapes.append(s)
    return shapes


@pytest.mark.parametrize("model", registry.MODELS)
def test_same_architecture_in_both_frameworks(model):
    pt = torch_models.build(model)
    k = tf_models.build(model, 32)
    assert tf_models.count_params(k) == torch_models.count_params(pt) == registry.REFERENCE_PARAMS[model]
    # layer for layer: the same trainable tensors, shape for shape (Keras orders a
    # residual shortcut by graph position, so compare as multisets)
    assert sorted(tuple(w.shape) for w in k.trainable_weights) == sorted(_torch_shapes_as_keras(pt))
    assert len(k.trainable_weights) == len(_torch_shapes_as_keras(pt))
    x = torch.randn(2, 3, 32, 32)
    out_pt = pt(x) if model != "cyclegan" else pt.G_A(x)
    out_tf = k(x.permute(0, 2, 3, 1).numpy(), training=False)
    expected = tuple(out_pt.shape) if out_pt.ndim == 2 else tuple(out_pt.permute(0, 2, 3, 1).shape)
    assert tuple(out_tf.shape) == expected


def test_instance_norm_and_reflection_pad_match_pytorch():
    x = torch.randn(2, 3, 8, 8)
    pt = torch.nn.InstanceNorm2d(3)(torch.nn.ReflectionPad2d(2)(x)).permute(0, 2, 3, 1).numpy()
    k = tf_models.InstanceNorm()(tf_models.ReflectionPad2D(2)(x.permute(0, 2, 3, 1).numpy()))
    assert abs(k.numpy() - pt).max() < 1e-4


@pytest.mark.parametrize("model", registry.MODELS)
@pytest.mark.parametrize("mode", registry.MODES)
def test_runs_a_few_steps_and_the_record_is_complete(model, mode, tiny):
    result = run_workload(tiny(model, "tensorflow", mode))
    assert tuple(result) == RESULT_KEYS
    assert result["params"] == registry.REFERENCE_PARAMS[model]
    assert (result["device"], result["framework"]) == ("cpu", "tensorflow")
    assert result["framework_version"] == tf.__version__ and result["threads"] >= 1
    assert result["samples_per_second"] > 0 and result["rss_peak_bytes"] > 50 * 2**20
    assert result["framework_peak_memory_bytes"] is None and result["nvml_peak_memory_bytes"] is None
    if mode == "train":
        assert all(math.isfinite(x) for x in result["losses"]) and len(result["losses"]) == 3
    else:
        assert result["loss_last"] is None


@pytest.mark.parametrize("execution", ["eager", "compiled"])
def test_eager_and_xla_inference_run(execution, tiny):
    r = run_workload(tiny("conv6", "tensorflow", "infer", execution=execution, batch_size=1))
    assert r["execution"] == execution and r["step_time_p50_s"] > 0


def test_loss_falls_on_the_learnable_task():
    result = run_workload(WorkloadSpec(model="conv6", framework="tensorflow", steps=40, warmup_steps=0,
                                       batch_size=16, device="cpu", seed=0))
    losses = result["losses"]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 2.0
    assert last < 0.6 * first, losses


def test_trains_on_real_format_files(cifar_dir, horse2zebra_dir, tiny):
    # eager: the files reach the step the same way; tracing the step into a graph (tens of
    # seconds for CycleGAN) is what test_runs_a_few_steps_and_the_record_is_complete covers
    r = run_workload(tiny("resnet18", "tensorflow", data_dir=str(cifar_dir), execution="eager"))
    assert r["data"] == str(cifar_dir) and math.isfinite(r["loss_last"])
    r = run_workload(tiny("cyclegan", "tensorflow", data_dir=str(horse2zebra_dir), execution="eager"))
    assert r["data"] == str(horse2zebra_dir) and math.isfinite(r["loss_last"])


def test_gpu_request_runs_on_gpu_or_says_there_is_none(tiny):
    spec = tiny("conv6", "tensorflow", "infer", device="gpu")
    if tf.config.list_physical_devices("GPU"):
        assert run_workload(spec)["device"] == "gpu"
    else:
        with pytest.raises(RuntimeError, match="TensorFlow sees no GPU"):
            run_workload(spec)
