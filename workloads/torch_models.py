"""The four study models as `torch.nn.Module`s (NCHW).

Invariants:
- Layouts match `workloads.tf_models` layer for layer; trainable-parameter
  counts equal `registry.REFERENCE_PARAMS` (tests assert both).
- Imports torch at module level, so only workload code imports this module.
- Classifiers take (N, 3, 32, 32) and return logits (N, 10). CycleGAN
  generators map (N, 3, S, S) in [-1, 1] to the same shape; discriminators
  return a (N, 1, s, s) patch map.
"""
from __future__ import annotations

import torch
from torch import nn

from workloads import registry

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
             512, 512, 512, "M", 512, 512, 512, "M"]


class Conv6(nn.Module):
    """Conv-6: 64 64 pool 128 128 pool 256 256 pool, FC 256 256 10."""

    def __init__(self, num_classes: int = registry.CIFAR_CLASSES):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in (64, 128, 256):
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 4 * 4, 256), nn.ReLU(inplace=True),
            nn.Linear(256, 256), nn.ReLU(inplace=True),
            nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class VGG16(nn.Module):
    """kuangliu/pytorch-cifar VGG('VGG16'): conv-BN-ReLU blocks, 512->10 head."""

    def __init__(self, num_classes: int = registry.CIFAR_CLASSES):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """kuangliu/pytorch-cifar ResNet18: 3x3 stem, [2,2,2,2] basic blocks."""

    def __init__(self, num_classes: int = registry.CIFAR_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, width, stride), BasicBlock(width, width, 1)]
            cin = width
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.layers(self.stem(x))
        out = torch.mean(out, dim=(2, 3))  # = avg_pool2d(4) at 32x32
        return self.fc(out)


def _inorm(c: int) -> nn.Module:
    # The reference's 'instance' norm: affine=False, no running stats.
    return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _inorm(c), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _inorm(c))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """resnet_9blocks, ngf=64, instance norm (conv bias on, as the reference)."""

    def __init__(self, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), _inorm(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 1), _inorm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1),
                       _inorm(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """70x70 PatchGAN, n_layers=3, ndf=64, instance norm."""

    def __init__(self, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1), _inorm(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def _init_gan_weights(module: nn.Module) -> None:
    """The reference's init_weights('normal', 0.02): conv weights N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class CycleGAN(nn.Module):
    """Container for G_A (A->B), G_B (B->A), D_A (judges B), D_B (judges A)."""

    def __init__(self):
        super().__init__()
        self.G_A, self.G_B = ResnetGenerator(), ResnetGenerator()
        self.D_A, self.D_B = NLayerDiscriminator(), NLayerDiscriminator()
        self.apply(_init_gan_weights)

    def forward(self, x):  # inference = translate A -> B
        return self.G_A(x)


def build(model: str) -> nn.Module:
    return {"conv6": Conv6, "vgg16": VGG16, "resnet18": ResNet18, "cyclegan": CycleGAN}[model]()


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
