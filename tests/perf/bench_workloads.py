"""Harness overhead: the runner's training throughput against a bare hand-written loop.

Same model, optimiser, staged batches, step and warm-up counts, same process,
alternating A-B / B-A in each repeat so drift hits both sides. Prints each
repeat and the medians; the figure recorded in docs/benchmarks.md is the
median of the per-repeat ratios (runner / bare). Not a test: it prints.

    .venv/bin/python tests/perf/bench_workloads.py [--repeats 9] [--steps 20] [--frameworks pytorch,tensorflow]
        [--threads N]   # N intra-op threads for both sides (default: the frameworks' own)

The machine's load average is printed before and after: on a shared machine a
busy neighbour moves single repeats by 2x, which is why the median is kept.
Besides wall-clock throughput it prints throughput per CPU-second of this
process over the measured steps, which neighbours barely move when each side
runs one thread (`--threads 1`; with more threads, OpenMP spin-waiting under
contention inflates CPU time too).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from workloads import data  # noqa: E402
from workloads.runner import WorkloadSpec, run_workload  # noqa: E402

MODEL, BATCH = "conv6", 32


def bare_torch(steps: int, warmup: int) -> float:
    import torch
    import torch.nn.functional as F

    from workloads import torch_models

    torch.manual_seed(0)
    net = torch_models.build(MODEL).train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    n = min(steps + warmup, 16)
    batches = [(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y))
               for x, y in data.make_batches(MODEL, BATCH, n, 32)]
    for i in range(warmup + steps):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        x, y = batches[i % n]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    loss.item()
    return steps * BATCH / (time.perf_counter() - t0), steps * BATCH / (time.process_time() - c0)


def bare_tensorflow(steps: int, warmup: int) -> float:
    import keras
    import tensorflow as tf

    from workloads import tf_models

    keras.utils.set_random_seed(0)
    net = tf_models.build(MODEL)
    opt = keras.optimizers.Adam(learning_rate=3e-4, epsilon=1e-8)
    opt.build(net.trainable_variables)
    n = min(steps + warmup, 16)
    batches = [(tf.constant(x), tf.constant(y)) for x, y in data.make_batches(MODEL, BATCH, n, 32)]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=net(x, training=True)))
        opt.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))
        return loss

    for i in range(warmup + steps):
        if i == warmup:
            t0, c0 = time.perf_counter(), time.process_time()
        loss = step(*batches[i % n])
    loss.numpy()
    return steps * BATCH / (time.perf_counter() - t0), steps * BATCH / (time.process_time() - c0)


def runner(framework: str, steps: int, warmup: int) -> float:
    spec = WorkloadSpec(model=MODEL, framework=framework, steps=steps, warmup_steps=warmup,
                        batch_size=BATCH, device="cpu")
    r = run_workload(spec)
    return r["samples_per_second"], steps * BATCH / r["measured_cpu_time_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--frameworks", default="pytorch,tensorflow")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        if "pytorch" in args.frameworks:
            import torch

            torch.set_num_threads(args.threads)
        if "tensorflow" in args.frameworks:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    bare = {"pytorch": bare_torch, "tensorflow": bare_tensorflow}
    print(f"harness overhead: {MODEL} train, batch {BATCH}, {args.steps} steps after {args.warmup} warm-up, "
          f"{args.repeats} repeats, CPU ({os.cpu_count()} cores), threads {args.threads or 'default'}")
    for fw in args.frameworks.split(","):
        wall, cpu, r_sps, b_sps = [], [], [], []
        for rep in range(args.repeats):
            if rep % 2 == 0:
                r = runner(fw, args.steps, args.warmup)
                b = bare[fw](args.steps, args.warmup)
            else:
                b = bare[fw](args.steps, args.warmup)
                r = runner(fw, args.steps, args.warmup)
            wall.append(r[0] / b[0])
            cpu.append(r[1] / b[1])
            r_sps.append(r[0])
            b_sps.append(b[0])
            print(f"  {fw} repeat {rep}: runner {r[0]:7.1f} samples/s ({r[1]:6.1f}/CPU-s)  "
                  f"bare {b[0]:7.1f} samples/s ({b[1]:6.1f}/CPU-s)  ratio wall {r[0] / b[0]:.3f} "
                  f"CPU {r[1] / b[1]:.3f}", flush=True)
        med = statistics.median
        print(f"{fw}: median runner {med(r_sps):.1f} samples/s, median bare {med(b_sps):.1f} samples/s; "
              f"median ratio wall-clock {med(wall):.3f} (min {min(wall):.3f}, max {max(wall):.3f}), "
              f"per CPU-second {med(cpu):.3f} (min {min(cpu):.3f}, max {max(cpu):.3f})", flush=True)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
