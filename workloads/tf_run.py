"""TensorFlow/Keras side of the runner: builds the model and its train/infer step.

Invariants:
- Mirrors `workloads.torch_run`: same losses, optimisers (Adam epsilon 1e-8 as
  PyTorch's), CycleGAN step order and loss weights.
- Execution: `default` wraps the step in `tf.function` (the Keras custom
  training loop idiom), `eager` runs it op by op, `compiled` uses
  `tf.function(jit_compile=True)` (XLA kernel fusion).
- The GPU memory cap is a logical device with `memory_limit`; it must be set
  before TensorFlow initialises the GPU, so a worker process should run one
  capped workload. When it cannot be applied the result says so in `notes`.
- `step()` returns the loss as a float in train mode (the per-step sync), and
  None in infer mode after fetching one output element (the sync).
- Checkpoint state (train mode): `save_state()` writes one `.npz` with every
  model variable (`net.weights`: all four networks for CycleGAN, BatchNorm
  moving statistics included), every optimizer's variables (iteration count,
  learning rate, moments; CycleGAN: generators', then discriminators') and the
  state of tf.random's global generator and of Keras' global seed generator.
  `load_state()` checks every count and shape before it assigns anything.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from workloads import measure, registry  # noqa: E402
from workloads import tf_models as tm  # noqa: E402


def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _cap_memory(gpu, fraction: float, notes: list[str]) -> None:
    total = measure.nvml_total_memory()
    if total is None:
        notes.append(measure.warn_once("memory_fraction not applied: total GPU memory unknown without NVML"))
        return
    limit_mib = max(1, int(fraction * total / 2**20))
    try:
        tf.config.set_logical_device_configuration(
            gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit_mib)])
    except RuntimeError as e:  # TF already initialised the GPU in this process
        notes.append(measure.warn_once(f"memory_fraction not applied: {e}"))


class Session:
    def __init__(self, spec, memory_fraction):
        self.spec = spec
        self.notes: list[str] = []
        gpus = tf.config.list_physical_devices("GPU")
        use_gpu = spec.device == "gpu" or (spec.device == "auto" and bool(gpus))
        if use_gpu and not gpus:
            raise RuntimeError("device gpu asked but TensorFlow sees no GPU")
        self.on_gpu = use_gpu
        self.device_name = measure.cpu_name()
        if use_gpu:
            if memory_fraction is not None:
                _cap_memory(gpus[0], memory_fraction, self.notes)
            details = tf.config.experimental.get_device_details(gpus[0])
            self.device_name = details.get("device_name", "GPU:0")
        self.tf_device = "/GPU:0" if use_gpu else "/CPU:0"
        keras.utils.set_random_seed(spec.seed)
        with tf.device(self.tf_device):
            self.net = tm.build(spec.model, spec.resolved_image_size)
        self.params = tm.count_params(self.net)
        self.framework_version = tf.__version__
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or measure.usable_cpus()
        self._opts: list = []
        with tf.device(self.tf_device):
            self._build_step()
        self.has_state = spec.mode == "train"

    def _wrap(self, fn):
        if self.spec.execution == "eager":
            return fn
        return tf.function(fn, jit_compile=self.spec.execution == "compiled")

    # ------------------------------------------------------------ steps
    def _build_step(self) -> None:
        spec, net = self.spec, self.net
        if spec.mode == "infer":
            fwd = net.G_A if spec.model == "cyclegan" else net
            self._fn = self._wrap(lambda x: fwd(x, training=False))
            return
        if spec.model == "cyclegan":
            self._fn = self._wrap(self._cyclegan_step())
            return
        if spec.model == "conv6":
            opt = keras.optimizers.Adam(learning_rate=3e-4, epsilon=1e-8)
        else:
            opt = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
        variables = net.trainable_variables
        opt.build(variables)
        self._opts = [opt]

        def train_step(x, y):
            with tf.GradientTape() as tape:
                logits = net(x, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        self._fn = self._wrap(train_step)

    def _cyclegan_step(self):
        n = self.net
        lam, lam_idt = registry.CYCLE_LAMBDA, registry.CYCLE_LAMBDA * registry.IDENTITY_LAMBDA
        g_vars = n.G_A.trainable_variables + n.G_B.trainable_variables
        d_vars = n.D_A.trainable_variables + n.D_B.trainable_variables
        opt_g = keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8)
        opt_d = keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8)
        opt_g.build(g_vars)
        opt_d.build(d_vars)
        self._opts = [opt_g, opt_d]

        def l1(a, b):
            return tf.reduce_mean(tf.abs(a - b))

        def lsgan(pred, real: bool):
            return tf.reduce_mean(tf.square(pred - (1.0 if real else 0.0)))

        def train_step(real_a, real_b):
            with tf.GradientTape() as tape:
                fake_b, fake_a = n.G_A(real_a, training=True), n.G_B(real_b, training=True)
                rec_a, rec_b = n.G_B(fake_b, training=True), n.G_A(fake_a, training=True)
                loss_idt = (l1(n.G_A(real_b, training=True), real_b) + l1(n.G_B(real_a, training=True), real_a)) * lam_idt
                loss_gan = lsgan(n.D_A(fake_b, training=True), True) + lsgan(n.D_B(fake_a, training=True), True)
                loss_cycle = (l1(rec_a, real_a) + l1(rec_b, real_b)) * lam
                loss_g = loss_gan + loss_cycle + loss_idt
            opt_g.apply_gradients(zip(tape.gradient(loss_g, g_vars), g_vars))
            fake_b, fake_a = tf.stop_gradient(fake_b), tf.stop_gradient(fake_a)
            with tf.GradientTape() as tape:
                loss_d_a = 0.5 * (lsgan(n.D_A(real_b, training=True), True) + lsgan(n.D_A(fake_b, training=True), False))
                loss_d_b = 0.5 * (lsgan(n.D_B(real_a, training=True), True) + lsgan(n.D_B(fake_a, training=True), False))
                loss_d = loss_d_a + loss_d_b
            opt_d.apply_gradients(zip(tape.gradient(loss_d, d_vars), d_vars))
            return loss_g

        return train_step

    # ------------------------------------------------------------ runner API
    def stage(self, batches: list) -> list:
        with tf.device(self.tf_device):
            return [(tf.constant(a), tf.constant(b)) for a, b in batches]

    def step(self, batch) -> float | None:
        with tf.device(self.tf_device):
            if self.spec.mode == "infer":
                out = self._fn(batch[0])
                out[0, 0, 0].numpy() if len(out.shape) == 4 else out[0, 0].numpy()
                return None
            return float(self._fn(*batch).numpy())

    # ------------------------------------------------------------ checkpoint state
    state_suffix = ".npz"

    def _state_variables(self) -> dict:
        out = {f"model_{i:05d}": v for i, v in enumerate(self.net.weights)}
        for k, opt in enumerate(self._opts):
            out.update({f"opt{k}_{i:05d}": v for i, v in enumerate(opt.variables)})
        out["rng_tf"] = tf.random.get_global_generator().state
        keras_seed = _keras_seed_state()
        if keras_seed is not None:
            out["rng_keras"] = keras_seed
        return out

    def save_state(self, fh) -> None:
        """An .npz (what np.savez writes), one variable copied to host memory at a time."""
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for k, v in self._state_variables().items():
                with zf.open(f"{k}.npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asarray(v.numpy()), allow_pickle=False)

    def load_state(self, path) -> None:
        with np.load(path) as saved:
            arrays = {k: saved[k] for k in saved.files}
        variables = self._state_variables()
        if "rng_keras" not in arrays:
            variables.pop("rng_keras", None)
        missing = sorted(set(variables) - set(arrays))
        extra = sorted(set(arrays) - set(variables) - {"rng_keras"})
        if missing or extra:
            raise ValueError(f"variables differ: missing {missing[:3]}, unexpected {extra[:3]}")
        for k, v in variables.items():
            if tuple(v.shape) != arrays[k].shape:
                raise ValueError(f"{k} ({getattr(v, 'path', v.name)}) has shape {tuple(v.shape)}, "
                                 f"the checkpoint {arrays[k].shape}")
        for k, v in variables.items():
            v.assign(arrays[k])

    def _mem_device(self) -> str:
        return "GPU:0"

    def reset_peak(self) -> None:
        if self.on_gpu:
            tf.config.experimental.reset_memory_stats(self._mem_device())

    def framework_peak(self) -> int | None:
        if not self.on_gpu:
            return None
        return int(tf.config.experimental.get_memory_info(self._mem_device())["peak"])


def _keras_seed_state():
    """The state variable of Keras' global seed generator (private API: None if it moved)."""
    try:
        from keras.src.random import seed_generator

        return seed_generator.global_seed_generator().state
    except Exception:  # noqa: BLE001 - best effort; the models draw no random numbers in training
        return None
