"""Fixtures for the workload tests: tiny specs, real-format data written to tmp_path, and
PyTorch held to one thread for a test (`torch_one_thread`, restored after it)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from workloads.runner import WorkloadSpec

# The smallest sizes each model accepts, so every framework test stays fast.
TINY = {
    "conv6": {"batch_size": 4},
    "vgg16": {"batch_size": 2},
    "resnet18": {"batch_size": 2},
    "cyclegan": {"batch_size": 1, "image_size": 32},
}


def tiny_spec(model: str, framework: str, mode: str = "train", **kw) -> WorkloadSpec:
    args = {"model": model, "framework": framework, "mode": mode, "steps": 2, "warmup_steps": 1, "device": "cpu"}
    args.update(TINY[model])
    args.update(kw)
    return WorkloadSpec(**args)


def write_cifar_batch(path, images_nchw: np.ndarray, labels) -> None:
    """A CIFAR-10 python batch as the dataset ships it: pickled dict, bytes keys."""
    data = images_nchw.reshape(len(images_nchw), -1).astype(np.uint8)
    with open(path, "wb") as fh:
        pickle.dump({b"batch_label": b"test batch", b"labels": list(labels), b"data": data,
                     b"filenames": [b"x.png"] * len(labels)}, fh)


@pytest.fixture
def cifar_dir(tmp_path):
    """Two batches; image i has red plane = 10*i, green 100, blue 200, label i % 10."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for b in (1, 2):
        n = 6
        imgs = np.zeros((n, 3, 32, 32), np.uint8)
        for i in range(n):
            imgs[i, 0] = 10 * (i + (b - 1) * n)
            imgs[i, 1] = 100
            imgs[i, 2] = 200
        write_cifar_batch(root / f"data_batch_{b}", imgs, [(i + (b - 1) * n) % 10 for i in range(n)])
    return tmp_path


@pytest.fixture
def horse2zebra_dir(tmp_path):
    """trainA: 3 red 40x48 PNGs; trainB: 2 blue 50x50 JPGs (unequal sizes, like the real set)."""
    from PIL import Image

    root = tmp_path / "horse2zebra"
    (root / "trainA").mkdir(parents=True)
    (root / "trainB").mkdir()
    for i in range(3):
        Image.new("RGB", (40, 48), (255, 0, 0)).save(root / "trainA" / f"{i}.png")
    for i in range(2):
        Image.new("RGB", (50, 50), (0, 0, 255)).save(root / "trainB" / f"{i}.jpg", quality=95)
    (root / "trainA" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def torch_one_thread():
    """Two OpenMP threads on a busy 2-core machine spin and run several times slower than
    one (conv6, 40 steps at batch 16: 12-31 s on two threads, 6-7 s on one)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny():
    """`tiny(model, framework, mode, **overrides)` -> the smallest WorkloadSpec that runs."""
    return tiny_spec
