"""The four study models as `keras.Model`s (Keras 3 on TensorFlow, NHWC).

Invariants:
- Layer for layer the layouts of `workloads.torch_models`; the trainable
  parameter counts equal `registry.REFERENCE_PARAMS` (tests assert it).
- Padding copies PyTorch's symmetric padding (explicit ZeroPadding2D before a
  strided 'valid' convolution); only the transposed convolutions use 'same',
  which gives the same shape and parameters as PyTorch's
  `padding=1, output_padding=1`.
- Imports keras at module level, so only workload code imports this module.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from workloads import registry
from workloads.torch_models import VGG16_CFG

BN = dict(momentum=0.9, epsilon=1e-5)  # PyTorch's BatchNorm2d defaults


class ReflectionPad2D(layers.Layer):
    def __init__(self, pad: int, **kw):
        super().__init__(**kw)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")


class InstanceNorm(layers.Layer):
    """PyTorch's InstanceNorm2d(affine=False): per-sample, per-channel, no weights."""

    def __init__(self, epsilon: float = 1e-5, **kw):
        super().__init__(**kw)
        self.epsilon = epsilon

    def call(self, x):
        mean, var = ops.moments(x, axes=[1, 2], keepdims=True)
        return (x - mean) * ops.rsqrt(var + self.epsilon)


def _input(size: int):
    return keras.Input((size, size, 3))


def conv6(num_classes: int = registry.CIFAR_CLASSES) -> keras.Model:
    x = inp = _input(registry.CIFAR_SIZE)
    for width in (64, 128, 256):
        for _ in range(2):
            x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(256, activation="relu")(x)
    return keras.Model(inp, layers.Dense(num_classes)(x), name="conv6")


def vgg16(num_classes: int = registry.CIFAR_CLASSES) -> keras.Model:
    x = inp = _input(registry.CIFAR_SIZE)
    for v in VGG16_CFG:
        if v == "M":
            x = layers.MaxPooling2D(2)(x)
        else:
            x = layers.Conv2D(v, 3, padding="same")(x)
            x = layers.ReLU()(layers.BatchNormalization(**BN)(x))
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(num_classes)(x), name="vgg16")


def _conv_bn(x, filters: int, kernel: int, stride: int):
    if kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2)(x)
    x = layers.Conv2D(filters, kernel, stride, padding="valid", use_bias=False)(x)
    return layers.BatchNormalization(**BN)(x)


def _basic_block(x, cin: int, cout: int, stride: int):
    out = layers.ReLU()(_conv_bn(x, cout, 3, stride))
    out = _conv_bn(out, cout, 3, 1)
    short = _conv_bn(x, cout, 1, stride) if (stride != 1 or cin != cout) else x
    return layers.ReLU()(layers.Add()([out, short]))


def resnet18(num_classes: int = registry.CIFAR_CLASSES) -> keras.Model:
    inp = _input(registry.CIFAR_SIZE)
    x = layers.ReLU()(_conv_bn(inp, 64, 3, 1))
    cin = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = _basic_block(x, cin, width, stride)
        x = _basic_block(x, width, width, 1)
        cin = width
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(num_classes)(x), name="resnet18")


def _gan_init():
    # The CycleGAN reference's init_weights('normal', 0.02); biases start at 0.
    return keras.initializers.RandomNormal(0.0, 0.02)


def _gan_conv(filters: int, kernel: int, strides: int = 1):
    return layers.Conv2D(filters, kernel, strides, kernel_initializer=_gan_init())


def resnet_generator(size: int, ngf: int = 64, n_blocks: int = 9, name: str = "G") -> keras.Model:
    inp = _input(size)
    x = _gan_conv(ngf, 7)(ReflectionPad2D(3)(inp))
    x = layers.ReLU()(InstanceNorm()(x))
    for mult in (1, 2):
        x = _gan_conv(ngf * mult * 2, 3, 2)(layers.ZeroPadding2D(1)(x))
        x = layers.ReLU()(InstanceNorm()(x))
    c = ngf * 4
    for _ in range(n_blocks):
        y = _gan_conv(c, 3)(ReflectionPad2D(1)(x))
        y = layers.ReLU()(InstanceNorm()(y))
        y = InstanceNorm()(_gan_conv(c, 3)(ReflectionPad2D(1)(y)))
        x = layers.Add()([x, y])
    for mult in (4, 2):
        x = layers.Conv2DTranspose(ngf * mult // 2, 3, 2, padding="same", kernel_initializer=_gan_init())(x)
        x = layers.ReLU()(InstanceNorm()(x))
    x = _gan_conv(3, 7)(ReflectionPad2D(3)(x))
    return keras.Model(inp, layers.Activation("tanh")(x), name=name)


def patch_discriminator(size: int, ndf: int = 64, n_layers: int = 3, name: str = "D") -> keras.Model:
    inp = _input(size)
    x = _gan_conv(ndf, 4, 2)(layers.ZeroPadding2D(1)(inp))
    x = layers.LeakyReLU(0.2)(x)
    mult = 1
    for n in range(1, n_layers + 1):
        mult = min(2 ** n, 8)
        stride = 2 if n < n_layers else 1
        x = _gan_conv(ndf * mult, 4, stride)(layers.ZeroPadding2D(1)(x))
        x = layers.LeakyReLU(0.2)(InstanceNorm()(x))
    x = _gan_conv(1, 4, 1)(layers.ZeroPadding2D(1)(x))
    return keras.Model(inp, x, name=name)


class CycleGAN(keras.Model):
    """Holds G_A (A->B), G_B (B->A), D_A (judges B), D_B (judges A)."""

    def __init__(self, size: int, **kw):
        super().__init__(name="cyclegan", **kw)
        self.G_A = resnet_generator(size, name="G_A")
        self.G_B = resnet_generator(size, name="G_B")
        self.D_A = patch_discriminator(size, name="D_A")
        self.D_B = patch_discriminator(size, name="D_B")

    def call(self, x, training=False):  # inference = translate A -> B
        return self.G_A(x, training=training)


def build(model: str, image_size: int | None = None) -> keras.Model:
    if model == "cyclegan":
        return CycleGAN(image_size or registry.HORSE2ZEBRA_SIZE)
    return {"conv6": conv6, "vgg16": vgg16, "resnet18": resnet18}[model]()


def count_params(model: keras.Model) -> int:
    total = 0
    for w in model.trainable_weights:
        n = 1
        for d in w.shape:
            n *= int(d)
        total += n
    return total
