"""What the script sandbox costs an attempt's start: the same trivial command run by
scheduler.runtime.scripts.run plain and inside scheduler.runtime.sandbox, alternated, N times each.

    .venv/bin/python tests/perf/bench_sandbox.py [N]

Prints each side's median wall time (start to exit, output copied) and the difference.
Not a timed test: record the figures in docs/benchmarks.md with the machine."""
from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from scheduler.runtime import sandbox, scripts


class _Log(io.StringIO):
    def tail(self) -> str:
        return self.getvalue()


def main(n: int = 20) -> None:
    print(sandbox.mechanism())
    with tempfile.TemporaryDirectory() as tmp:
        work, ck = Path(tmp, "work"), Path(tmp, "ck")
        work.mkdir()
        ck.mkdir()
        (work / "t.py").write_text("print('hi')\n")
        command = [sys.executable, "t.py"]
        env = scripts.script_env(job_id=1, attempt=1, slices=1, memory_fraction=0.25,
                                 checkpoint_dir=sandbox.CHECKPOINT, workdir=sandbox.WORK, site_dir=sandbox.SITE)
        times: dict[str, list[float]] = {"plain": [], "sandboxed": []}
        for i in range(n):
            for side in times:
                box = None
                if side == "sandboxed":
                    box = sandbox.prepare(command, workdir=work, checkpoint_dir=ck, site_dir=scripts.SITE_DIR,
                                          limits=sandbox.Limits(1 << 30, 256), cgroup_name=f"bench{i}-{os.getpid()}")
                t0 = time.perf_counter()
                scripts.run(command, cwd=work, env=env, log=_Log(), stop_requested=lambda: False, sandbox=box,
                            poll_s=0.01)
                times[side].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"n={n}: plain {med['plain'] * 1e3:.1f} ms, sandboxed {med['sandboxed'] * 1e3:.1f} ms, "
          f"difference {(med['sandboxed'] - med['plain']) * 1e3:.1f} ms (median start to exit)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
