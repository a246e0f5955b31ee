"""PyTorch side of the runner: builds the model and its train/infer step.

Invariants:
- `prepare()` does every one-off cost (import, build, device placement,
  memory cap, staging batches); `Session.step()` is one timed step and returns
  the loss as a float in train mode (`.item()` is the per-step sync), None in
  infer mode (after `torch.cuda.synchronize()` on a GPU).
- The step is the framework's default idiom: eager execution, or
  `torch.compile` when `spec.execution == "compiled"`.
- Checkpoint state (train mode): `save_state()` writes one `torch.save` file
  with the model's `state_dict` (all four networks for CycleGAN, buffers
  included), every optimizer's `state_dict` (CycleGAN: generators', then
  discriminators'), torch's CPU RNG state and its CUDA device's; `load_state()`
  puts them back (tensors only: it loads with `weights_only=True`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from workloads import measure, registry
from workloads import torch_models as tm


def gpu_available() -> bool:
    return torch.cuda.is_available()


class Session:
    def __init__(self, spec, memory_fraction):
        self.spec = spec
        self.notes: list[str] = []
        use_gpu = spec.device == "gpu" or (spec.device == "auto" and torch.cuda.is_available())
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("device gpu asked but PyTorch sees no CUDA GPU")
        self.device = torch.device("cuda:0" if use_gpu else "cpu")
        self.on_gpu = use_gpu
        self.device_name = measure.cpu_name()
        if use_gpu:
            torch.backends.cudnn.benchmark = True
            if memory_fraction is not None:
                torch.cuda.set_per_process_memory_fraction(memory_fraction, self.device)
            self.device_name = torch.cuda.get_device_name(self.device)
        torch.manual_seed(spec.seed)
        self.net = tm.build(spec.model).to(self.device)
        self.params = tm.count_params(self.net)
        self.framework_version = torch.__version__
        self.threads = torch.get_num_threads()
        self._opts: list = []
        self._build_step()
        self.has_state = spec.mode == "train"

    # ------------------------------------------------------------ steps
    def _build_step(self) -> None:
        spec, net = self.spec, self.net
        if spec.mode == "infer":
            net.eval()
            fwd = net.G_A if spec.model == "cyclegan" else net
            self._fn = torch.compile(fwd) if spec.execution == "compiled" else fwd
            return
        net.train()
        if spec.model == "cyclegan":
            self._build_cyclegan_step()
            return
        if spec.model == "conv6":
            opt = torch.optim.Adam(net.parameters(), lr=3e-4)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def train_step(x, y):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss

        self._opts = [opt]
        self._fn = torch.compile(train_step) if spec.execution == "compiled" else train_step

    def _build_cyclegan_step(self) -> None:
        n = self.net
        lam, lam_idt = registry.CYCLE_LAMBDA, registry.CYCLE_LAMBDA * registry.IDENTITY_LAMBDA
        opt_g = torch.optim.Adam(list(n.G_A.parameters()) + list(n.G_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(list(n.D_A.parameters()) + list(n.D_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
        discs = list(n.D_A.parameters()) + list(n.D_B.parameters())

        def lsgan(pred, real: bool):
            return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))

        def train_step(real_a, real_b):
            fake_b, fake_a = n.G_A(real_a), n.G_B(real_b)
            rec_a, rec_b = n.G_B(fake_b), n.G_A(fake_a)
            # generators (the reference freezes D while G steps)
            for p in discs:
                p.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            loss_idt = (F.l1_loss(n.G_A(real_b), real_b) + F.l1_loss(n.G_B(real_a), real_a)) * lam_idt
            loss_gan = lsgan(n.D_A(fake_b), True) + lsgan(n.D_B(fake_a), True)
            loss_cycle = (F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b)) * lam
            loss_g = loss_gan + loss_cycle + loss_idt
            loss_g.backward()
            opt_g.step()
            # discriminators
            for p in discs:
                p.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            loss_d_a = 0.5 * (lsgan(n.D_A(real_b), True) + lsgan(n.D_A(fake_b.detach()), False))
            loss_d_b = 0.5 * (lsgan(n.D_B(real_a), True) + lsgan(n.D_B(fake_a.detach()), False))
            (loss_d_a + loss_d_b).backward()
            opt_d.step()
            return loss_g

        self._opts = [opt_g, opt_d]
        self._fn = train_step

    # ------------------------------------------------------------ runner API
    def stage(self, batches: list) -> list:
        """numpy NHWC batches -> device tensors (NCHW images, int64 labels)."""
        staged = []
        for first, second in batches:
            a = torch.from_numpy(first).permute(0, 3, 1, 2).contiguous().to(self.device)
            if self.spec.model == "cyclegan":
                b = torch.from_numpy(second).permute(0, 3, 1, 2).contiguous().to(self.device)
            else:
                b = torch.from_numpy(second).to(self.device)
            staged.append((a, b))
        return staged

    def step(self, batch) -> float | None:
        if self.spec.mode == "infer":
            with torch.inference_mode():
                self._fn(batch[0])
            if self.on_gpu:
                torch.cuda.synchronize(self.device)
            return None
        return self._fn(*batch).item()

    # ------------------------------------------------------------ checkpoint state
    state_suffix = ".pt"

    def save_state(self, fh) -> None:
        torch.save({"model": self.net.state_dict(), "optimizers": [o.state_dict() for o in self._opts],
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(self.device) if self.on_gpu else None}, fh)

    def load_state(self, path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if len(state["optimizers"]) != len(self._opts):
            raise ValueError(f"{len(state['optimizers'])} optimizer states for {len(self._opts)} optimizers")
        self.net.load_state_dict(state["model"])
        for opt, saved in zip(self._opts, state["optimizers"]):
            opt.load_state_dict(saved)  # moves the state to the parameters' device
        torch.set_rng_state(state["rng_cpu"])
        if self.on_gpu and state["rng_cuda"] is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    def reset_peak(self) -> None:
        if self.on_gpu:
            torch.cuda.reset_peak_memory_stats(self.device)

    def framework_peak(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device)) if self.on_gpu else None
