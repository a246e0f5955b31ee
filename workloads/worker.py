"""A worker process that runs workloads for `fairgpu bench`: `python -m workloads.worker`.

Protocol: stdin holds a JSON list of jobs, each `{"spec": {...WorkloadSpec
fields...}, "memory_fraction": null, "threads": null}`. For each job, in order, the worker
writes one JSON line `{"index": i, "result": {...}}` or `{"index": i,
"error": "one line"}` to its original stdout and flushes it.

Invariants:
- Only this protocol goes to the original stdout: file descriptor 1 is pointed
  at stderr before any framework loads, so library chatter cannot corrupt it.
- One framework per worker keeps the two frameworks' thread pools, allocators
  and GPU initialisation apart, and makes RSS figures per framework.
- A failing job is reported and the worker goes on to the next one.
- The first job's `threads` (if any) sets the framework's CPU threads once, before
  its first run: torch.set_num_threads, or TensorFlow's intra-op pool.
- The runner's step log (its stdout lines) is dropped: `fairgpu bench` shows
  its own progress, and the last stderr line is what it reports if the worker dies.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def main() -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from workloads.runner import WorkloadSpec, run_workload

    jobs = json.load(sys.stdin)
    if jobs and jobs[0].get("threads"):
        _set_threads(jobs[0]["spec"]["framework"], int(jobs[0]["threads"]))
    for i, job in enumerate(jobs):
        try:
            spec = WorkloadSpec(**job["spec"])
            with contextlib.redirect_stdout(io.StringIO()):
                msg = {"index": i, "result": run_workload(spec, job.get("memory_fraction"))}
        except Exception as e:  # noqa: BLE001 -- report and continue: one bad row must not sink the table
            text = str(e).strip().splitlines()
            msg = {"index": i, "error": f"{type(e).__name__}: {text[0] if text else ''}"}
        out.write(json.dumps(msg) + "\n")
        out.flush()
    return 0


def _set_threads(framework: str, n: int) -> None:
    """CPU threads for the framework's ops; TensorFlow's must be set before its runtime starts."""
    if framework == "pytorch":
        import torch

        torch.set_num_threads(n)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)


if __name__ == "__main__":
    sys.exit(main())
