"""Framework-free parts: the spec's validation, the data, the measurement helpers."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from workloads import data, measure, registry
from workloads.runner import RESULT_KEYS, WorkloadSpec, run_workload

BAD_SPECS = {
    "unknown model": (dict(model="alexnet"), "unknown model 'alexnet'"),
    "unknown framework": (dict(framework="jax"), "unknown framework 'jax'"),
    "unknown mode": (dict(mode="eval"), "unknown mode 'eval'"),
    "unknown device": (dict(device="tpu"), "unknown device 'tpu'"),
    "unknown execution": (dict(execution="jit"), "unknown execution 'jit'"),
    "zero steps": (dict(steps=0), "steps must be a positive integer"),
    "negative batch": (dict(batch_size=-2), "batch_size must be a positive integer"),
    "float steps": (dict(steps=2.5), "steps must be a positive integer"),
    "negative warm-up": (dict(warmup_steps=-1), "warmup_steps must be a non-negative"),
    "classifier not 32 px": (dict(image_size=64), "image size must be 32"),
    "cyclegan too small": (dict(model="cyclegan", image_size=16), "at least 32"),
    "cyclegan not multiple of 4": (dict(model="cyclegan", image_size=34), "multiple of 4"),
    "zero image size": (dict(model="cyclegan", image_size=0), "image_size must be a positive"),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_bad_spec_is_one_line_value_error(case):
    changes, message = BAD_SPECS[case]
    args = dict(model="conv6", framework="pytorch") | changes
    with pytest.raises(ValueError) as info:
        WorkloadSpec(**args)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_spec_defaults_resolve_per_model():
    assert WorkloadSpec(model="conv6", framework="pytorch").resolved_batch_size == 60
    gan = WorkloadSpec(model="cyclegan", framework="tensorflow")
    assert (gan.resolved_batch_size, gan.resolved_image_size) == (1, 256)
    with pytest.raises(Exception):
        gan.steps = 5  # frozen


def test_memory_fraction_out_of_range_is_refused_before_any_work():
    spec = WorkloadSpec(model="conv6", framework="pytorch", steps=1)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="memory_fraction"):
            run_workload(spec, memory_fraction=bad)


def test_light_imports_load_no_framework():
    code = ("import sys, workloads, workloads.runner, workloads.bench, workloads.report, scheduler.cli;"
            "from scheduler.cli import bench;"
            "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'matplotlib') if m in sys.modules];"
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_registry_is_consistent():
    assert registry.MODELS == ("conv6", "vgg16", "resnet18", "cyclegan")
    assert registry.FRAMEWORKS == ("pytorch", "tensorflow")
    assert set(registry.INFO) == set(registry.MODELS) == set(registry.REFERENCE_PARAMS)
    assert registry.REFERENCE_PARAMS["cyclegan"] == 2 * (
        registry.CYCLEGAN_GENERATOR_PARAMS + registry.CYCLEGAN_DISCRIMINATOR_PARAMS)
    assert tuple(RESULT_KEYS[:4]) == ("model", "framework", "mode", "execution")


# ------------------------------------------------------------------ data
def test_synthetic_cifar_shape_range_and_determinism():
    a = data.synthetic_cifar(8, 3, seed=1)
    b = data.synthetic_cifar(8, 3, seed=1)
    c = data.synthetic_cifar(8, 3, seed=2)
    x, y = a[0]
    assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() >= -1 and x.max() <= 1 and 0 <= y.min() and y.max() < 10
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0])


def test_synthetic_cifar_classes_are_separable_by_their_prototype():
    """The learnable task: nearest class prototype recovers the label far above chance."""
    protos = data._class_prototypes(32, 10).reshape(10, -1)
    (x, y), = data.synthetic_cifar(200, 1, seed=3)
    dists = ((x.reshape(200, 1, -1) - protos[None]) ** 2).sum(-1)
    assert (dists.argmin(1) == y).mean() > 0.9


def test_synthetic_horse2zebra_domains_differ():
    (a, b), = data.synthetic_horse2zebra(2, 1, size=32)
    assert a.shape == b.shape == (2, 32, 32, 3)
    # B carries vertical stripes: neighbouring columns differ much more than in A
    col_diff = lambda im: np.abs(np.diff(im, axis=2)).mean()  # noqa: E731
    assert col_diff(b) > 3 * col_diff(a)


def test_cifar10_loader_reads_python_batches(cifar_dir):
    images, labels = data.load_cifar10(cifar_dir)  # parent folder of cifar-10-batches-py
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(12)]
    # channel planes land in the last axis: image 7 is red 70, green 100, blue 200
    assert images[7, 5, 9].tolist() == [70, 100, 200]
    (x, y), = data.make_batches("conv6", 5, 1, 32, data_dir=cifar_dir / "cifar-10-batches-py", seed=0)
    assert x.shape == (5, 32, 32, 3) and y.shape == (5,)
    red = np.round((x[:, 0, 0, 0] + 1) * 127.5).astype(int)
    assert np.array_equal(red // 10 % 10, y)  # the label rides with its own image


def test_cifar10_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_"):
        data.load_cifar10(tmp_path)
    import pickle

    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"labels": [1]}, fh)
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        data.load_cifar10(tmp_path)


def test_horse2zebra_loader_reads_unpaired_folders(horse2zebra_dir):
    batches = data.make_batches("cyclegan", 2, 3, 32, data_dir=horse2zebra_dir, seed=0)
    assert len(batches) == 3
    for a, b in batches:
        assert a.shape == b.shape == (2, 32, 32, 3) and a.dtype == np.float32
        assert np.allclose(a[..., 0], 1, atol=0.02) and np.allclose(a[..., 2], -1, atol=0.02)  # red
        assert b[..., 2].mean() > 0.9 and b[..., 0].mean() < -0.9  # blue (JPEG, so roughly)


def test_horse2zebra_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="trainA"):
        data.make_batches("cyclegan", 1, 1, 32, data_dir=tmp_path)
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainB").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        data.make_batches("cyclegan", 1, 1, 32, data_dir=tmp_path)


# ------------------------------------------------------------------ measurement
@pytest.mark.parametrize("q", [0, 5, 50, 95, 100])
def test_percentile_matches_numpy(q):
    xs = list(np.random.default_rng(0).exponential(size=37))
    assert measure.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_percentile_has_one_rule_for_no_values_and_interpolates_linearly():
    assert measure.percentile([], 50) is None and measure.percentile(iter(()), 0) is None
    assert measure.percentile([7], 95) == 7 and measure.percentile([7], 0) == 7
    assert measure.percentile([4, 1, 3, 2], 50) == 2.5
    assert measure.percentile([0, 10, 20, 30, 40], 95) == pytest.approx(38)
    for q in (101, -1, 99.9, True):
        with pytest.raises(ValueError, match="whole number from 0 to 100"):
            measure.percentile([1, 2], q)


RSS_WINDOW = """
import numpy as np
from workloads import measure
rss = measure.RssPeak()
rss.reset()
before = rss.read()
block = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
del block
print(rss.read() - before)
"""


def test_rss_peak_sees_an_allocation_inside_its_window():
    # in a fresh process: in this one, memory earlier tests freed stays resident and is
    # handed out again without raising the RSS
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", RSS_WINDOW], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) >= 60 * 2**20


def test_nvml_sampler_never_invents_a_figure():
    sampler = measure.NvmlProcessPeak(interval_s=0.01)
    sampler.start()
    peak = sampler.stop()
    # this process holds no GPU memory: either NVML is missing, or it does not list us
    assert peak is None
    assert sampler.note
