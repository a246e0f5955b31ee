"""Data for the workloads, as framework-agnostic numpy batches.

Invariants:
- Every image batch is float32, NHWC, values in [-1, 1]; labels are int64.
  Frameworks convert (PyTorch transposes to NCHW) in the runner.
- The same (seed, batch_size, n) gives the same batches: runs are repeatable.
- Synthetic data is learnable: each CIFAR-shaped class has its own colour and
  stripe orientation under noise, so a classifier's loss must fall; the
  horse2zebra-shaped domains differ (A: smooth colour fields, B: the same
  fields under stripes), so a CycleGAN has something to map.
- Real data is read only from a local folder; nothing is downloaded.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from workloads import registry

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
ClassBatch = tuple[np.ndarray, np.ndarray]  # (images NHWC, labels)
PairBatch = tuple[np.ndarray, np.ndarray]  # (domain A, domain B), unpaired


# ---------------------------------------------------------------- synthetic
def _class_prototypes(size: int, classes: int) -> np.ndarray:
    """One fixed image per class: a colour plus a stripe pattern of its own angle."""
    rng = np.random.default_rng(1234)  # fixed: the task is the same for every seed
    colours = rng.uniform(-0.8, 0.8, size=(classes, 3))
    yy, xx = np.mgrid[0:size, 0:size] / size
    protos = np.empty((classes, size, size, 3), np.float32)
    for c in range(classes):
        angle = np.pi * c / classes
        stripes = np.sin(2 * np.pi * 4 * (xx * np.cos(angle) + yy * np.sin(angle)))
        protos[c] = 0.6 * colours[c] + 0.3 * stripes[..., None]
    return protos


def synthetic_cifar(batch_size: int, n: int, seed: int = 0, size: int = registry.CIFAR_SIZE,
                    noise: float = 0.35) -> list[ClassBatch]:
    rng = np.random.default_rng(seed)
    protos = _class_prototypes(size, registry.CIFAR_CLASSES)
    out = []
    for _ in range(n):
        y = rng.integers(0, registry.CIFAR_CLASSES, size=batch_size).astype(np.int64)
        x = protos[y] + noise * rng.standard_normal((batch_size, size, size, 3))
        out.append((np.clip(x, -1, 1).astype(np.float32), y))
    return out


def _smooth_field(rng: np.random.Generator, batch: int, size: int) -> np.ndarray:
    coarse = rng.uniform(-1, 1, size=(batch, 4, 4, 3))
    reps = -(-size // 4)
    field = np.repeat(np.repeat(coarse, reps, axis=1), reps, axis=2)[:, :size, :size]
    return 0.7 * field


def synthetic_horse2zebra(batch_size: int, n: int, size: int, seed: int = 0) -> list[PairBatch]:
    rng = np.random.default_rng(seed)
    xx = np.arange(size) / size
    stripes = np.where(np.sin(2 * np.pi * 8 * xx) > 0, 1.0, -1.0)[None, None, :, None]
    out = []
    for _ in range(n):
        a = _smooth_field(rng, batch_size, size)
        b = 0.5 * _smooth_field(rng, batch_size, size) + 0.5 * stripes
        a += 0.05 * rng.standard_normal(a.shape)
        b += 0.05 * rng.standard_normal(b.shape)
        out.append((np.clip(a, -1, 1).astype(np.float32), np.clip(b, -1, 1).astype(np.float32)))
    return out


# ---------------------------------------------------------------- real data
def load_cifar10(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10's python batches (`data_batch_*`) from `data_dir`.

    Accepts the folder that holds the batches or its parent (the tarball's
    `cifar-10-batches-py`). Returns (uint8 NHWC images, int64 labels).
    """
    root = Path(data_dir)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    files = sorted(root.glob("data_batch_*"))
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 python batches (data_batch_*) in {root}")
    xs, ys = [], []
    for f in files:
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        try:
            data, labels = d[b"data"], d[b"labels"]
        except KeyError as e:
            raise ValueError(f"{f} is not a CIFAR-10 python batch (missing {e})") from None
        data = np.asarray(data, np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{f}: expected rows of 3072 bytes, got shape {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(labels, np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _to_unit(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def cifar10_batches(data_dir, batch_size: int, n: int, seed: int = 0) -> list[ClassBatch]:
    images, labels = load_cifar10(data_dir)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), size=batch_size)
        out.append((_to_unit(images[idx]), labels[idx]))
    return out


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"missing image folder {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images (.jpg/.png) in {folder}")
    return files


def load_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image  # pillow comes with matplotlib

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, np.uint8)


def horse2zebra_batches(data_dir, batch_size: int, n: int, size: int, seed: int = 0) -> list[PairBatch]:
    """Unpaired batches from `data_dir/trainA` and `data_dir/trainB`, resized to `size`."""
    root = Path(data_dir)
    files_a, files_b = list_images(root / "trainA"), list_images(root / "trainB")
    rng = np.random.default_rng(seed)
    cache: dict[Path, np.ndarray] = {}

    def pick(files):
        chosen = [files[i] for i in rng.integers(0, len(files), size=batch_size)]
        for f in chosen:
            if f not in cache:
                cache[f] = load_image(f, size)
        return _to_unit(np.stack([cache[f] for f in chosen]))

    return [(pick(files_a), pick(files_b)) for _ in range(n)]


# ---------------------------------------------------------------- entry point
def make_batches(model: str, batch_size: int, n: int, image_size: int,
                 data_dir=None, seed: int = 0) -> list:
    """`n` batches for `model`: real data when `data_dir` is given, else synthetic."""
    if model == "cyclegan":
        if data_dir:
            return horse2zebra_batches(data_dir, batch_size, n, image_size, seed)
        return synthetic_horse2zebra(batch_size, n, image_size, seed)
    if data_dir:
        return cifar10_batches(data_dir, batch_size, n, seed)
    return synthetic_cifar(batch_size, n, seed, image_size)
