"""The study's workloads: names, frameworks, variants and reference figures.

Invariants:
- Pure data; importing this module imports no framework.
- `MODELS` and `FRAMEWORKS` are the only accepted names everywhere in fairgpu.
- `REFERENCE_PARAMS[m]` is the trainable-parameter count of model `m` in *both*
  frameworks (tests assert it); for CycleGAN it is both generators plus both
  discriminators.
"""
from __future__ import annotations

from dataclasses import dataclass

MODELS = ("conv6", "vgg16", "resnet18", "cyclegan")
FRAMEWORKS = ("pytorch", "tensorflow")
MODES = ("train", "infer")
DEVICES = ("auto", "cpu", "gpu")

CIFAR_SIZE = 32
CIFAR_CLASSES = 10
HORSE2ZEBRA_SIZE = 256
# Smallest CycleGAN image: the PatchGAN needs a non-empty output map.
CYCLEGAN_MIN_SIZE = 32


@dataclass(frozen=True)
class ModelInfo:
    name: str
    variant: str  # the layout chosen, named so docs and results agree
    source: str  # where the reference layout comes from
    dataset: str  # "cifar10" or "horse2zebra"
    default_batch: int  # the batch the reference trains with
    optimizer: str  # human-readable, matches both implementations


INFO = {
    "conv6": ModelInfo(
        "conv6", "Conv-6 (CIFAR-10)",
        "Frankle & Carbin, The Lottery Ticket Hypothesis (ICLR 2019), Fig. 2",
        "cifar10", 60, "Adam lr 3e-4"),
    "vgg16": ModelInfo(
        "vgg16", "VGG16-BN, CIFAR layout (13 conv + BN, one 512->10 linear)",
        "kuangliu/pytorch-cifar models/vgg.py, VGG('VGG16')",
        "cifar10", 128, "SGD lr 0.01 momentum 0.9"),
    "resnet18": ModelInfo(
        "resnet18", "ResNet18, CIFAR layout (3x3 stem, no max-pool)",
        "kuangliu/pytorch-cifar models/resnet.py, ResNet18()",
        "cifar10", 128, "SGD lr 0.01 momentum 0.9"),
    "cyclegan": ModelInfo(
        "cyclegan", "CycleGAN: resnet_9blocks generators + n_layers=3 PatchGAN, instance norm",
        "junyanz/pytorch-CycleGAN-and-pix2pix models/networks.py",
        "horse2zebra", 1, "Adam lr 2e-4 beta1 0.5 (LSGAN, cycle 10, identity 5)"),
}

# Trainable parameters, computed from the layer lists (see docs/workloads.md).
REFERENCE_PARAMS = {
    "conv6": 2_262_602,
    "vgg16": 14_728_266,
    "resnet18": 11_173_962,
    "cyclegan": 2 * 11_378_179 + 2 * 2_764_737,
}
CYCLEGAN_GENERATOR_PARAMS = 11_378_179
CYCLEGAN_DISCRIMINATOR_PARAMS = 2_764_737

# CycleGAN loss weights (the reference code's defaults).
CYCLE_LAMBDA = 10.0
IDENTITY_LAMBDA = 0.5  # times CYCLE_LAMBDA


def default_image_size(model: str) -> int:
    return HORSE2ZEBRA_SIZE if model == "cyclegan" else CIFAR_SIZE


def check_image_size(model: str, size: int) -> None:
    """Raise ValueError when `size` does not fit `model`."""
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    if model == "cyclegan":
        if size < CYCLEGAN_MIN_SIZE or size % 4:
            raise ValueError(
                f"cyclegan image size must be a multiple of 4 and at least "
                f"{CYCLEGAN_MIN_SIZE}, got {size}")
    elif size != CIFAR_SIZE:
        raise ValueError(f"{model} is a CIFAR-10 model: image size must be 32, got {size}")
