"""A worker process that runs workloads for `fairgpu bench`: `python -m workloads.worker`.

Protocol: stdin holds a JSON list of jobs, each `{"spec": {...WorkloadSpec
fields...}, "memory_fraction": null}`. For each job, in order, the worker
writes one JSON line `{"index": i, "result": {...}}` or `{"index": i,
"error": "one line"}` to its original stdout and flushes it.

Invariants:
- Only this protocol goes to the original stdout: file descriptor 1 is pointed
  at stderr before any framework loads, so library chatter cannot corrupt it.
- One framework per worker keeps the two frameworks' thread pools, allocators
  and GPU initialisation apart, and makes RSS figures per framework.
- A failing job is reported and the worker goes on to the next one.
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
    for i, job in enumerate(jobs):
        try:
            spec = WorkloadSpec(**job["spec"])
            with contextlib.redirect_stdout(io.StringIO()):
                msg = {"index": i, "result": run_workload(spec, job.get("memory_fraction"))}
        except Exception as e:  # report and continue: one bad row must not sink the table
            text = str(e).strip().splitlines()
            msg = {"index": i, "error": f"{type(e).__name__}: {text[0] if text else ''}"}
        out.write(json.dumps(msg) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
