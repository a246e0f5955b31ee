"""The GPU memory watchdog on a real GPU, for tests/gpu/check.py: a script that lifts its
framework's cap is stopped, and one that fills its cap is not.

Two 1-slice script jobs run together on a GPU split 4 ways, so each one's share is a
quarter of the GPU's memory:
- `lift.py` calls torch.cuda.set_per_process_memory_fraction(1.0), lifting the cap
  fairgpu set, and allocates twice its share. Then it holds that and sleeps. The
  watchdog must end it: FAILED after one attempt, GpuMemoryExceeded in the reason, and
  "NOT STOPPED" never printed.
- `at_cap.py` allocates until PyTorch refuses (its cap), then holds that for longer
  than the grace. It must succeed: NVML counts its CUDA context on top of the cap, and
  the margin is there for that. The facts keep its NVML peak, which is the real size of
  cap + context on this GPU.

Invariants:
- fairgpu is driven as a user would drive it: `fairgpu up` (e2e.Server), then its HTTP
  API. This module needs the standard library and httpx. PyTorch is needed only in the
  jobs.
- It runs only where there is a GPU (check.py leaves it out with --allow-cpu).
- `run()` returns facts, and `checks()` turns them into named pass/fail lines. A refusal
  (a submission answered 409 where no sandbox can start, say) is a fact and fails a
  check. It is never skipped.
"""
from __future__ import annotations

import io
import sys
import tarfile
import time
from pathlib import Path

import httpx

import e2e

SLICES_PER_GPU = 4
LIFT = """
import os, sys, time
import torch
share = int(float(os.environ["FAIRGPU_MEMORY_FRACTION"]) * torch.cuda.get_device_properties(0).total_memory)
torch.cuda.set_per_process_memory_fraction(1.0)  # lift the cap fairgpu set
held = []
while len(held) * (256 << 20) < 2 * share:
    held.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
print(f"LIFTED: allocated {len(held) * (256 << 20)} bytes past a share of {share}", flush=True)
time.sleep(120)
print("NOT STOPPED", flush=True)
"""
AT_CAP = """
import time
import torch
held = []
try:
    while True:
        held.append(torch.empty(64 << 20, dtype=torch.uint8, device="cuda"))
except torch.cuda.OutOfMemoryError:
    pass
print(f"AT CAP: allocated {len(held) * (64 << 20)} bytes", flush=True)
time.sleep(12)  # longer than the watchdog's grace (5 s)
"""


def _archive() -> bytes:
    """The jobs' working directory as a tar.gz of regular files (what `fairgpu submit script` sends)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("lift.py", LIFT), ("at_cap.py", AT_CAP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def run(state: Path, *, timeout_s: float) -> dict:
    """Start the server, run both jobs, and return the facts."""
    state.mkdir(parents=True, exist_ok=True)
    server = e2e.Server(state, ["--slices-per-gpu", str(SLICES_PER_GPU)])
    facts: dict = {"command": " ".join(server.cmd[1:]), "jobs": {}}
    try:
        url = server.wait_up(timeout_s)
        token = (state / "admin.token").read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as admin:
            r = admin.post("/v1/admin/accounts", json={"name": "cap-lab", "weight": 1, "allow_scripts": True})
            r.raise_for_status()
            r = admin.post("/v1/admin/tokens", json={"account": "cap-lab"})
            r.raise_for_status()
            with httpx.Client(base_url=url, timeout=30,
                              headers={"Authorization": f"Bearer {r.json()['token']}"}) as lab:
                facts["jobs"] = _jobs(lab, timeout_s)
    except (RuntimeError, OSError, ValueError, KeyError, httpx.HTTPError) as exc:  # a fact: checks() reports it
        facts["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        facts["server_exit"] = server.stop()
    return facts


def _jobs(lab: httpx.Client, timeout_s: float) -> dict:
    ids = {}
    for name in ("lift", "at_cap"):
        r = lab.post("/v1/uploads", content=_archive(), headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise RuntimeError(f"upload answered {r.status_code} {r.text[:300]}")
        r = lab.post("/v1/jobs", json={"model": "script", "slices": 1, "upload": r.json()["upload"],
                                       "command": [sys.executable, f"{name}.py"]})
        if r.status_code != 201:
            raise RuntimeError(f"submitting {name}.py answered {r.status_code} {r.text[:300]}")
        ids[name] = r.json()["id"]
    t0, deadline = time.monotonic(), time.monotonic() + timeout_s
    while True:
        rows = {name: lab.get(f"/v1/jobs/{i}").json() for name, i in ids.items()}
        if all(row["state"] in e2e.FINAL for row in rows.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("jobs not finished after {:.0f} s: {}".format(
                timeout_s, {n: row["state"] for n, row in rows.items()}))
        time.sleep(0.5)
    out = {}
    for name, row in rows.items():
        logs = lab.get(f"/v1/jobs/{ids[name]}/logs").json()
        text = "".join(chunk.get("text", "") for chunk in logs.get("output", []))
        result = row.get("result") or {}
        out[name] = {"id": ids[name], "state": row["state"], "attempts": row["attempts"], "error": row["error"],
                     "nvml_peak_memory_bytes": result.get("nvml_peak_memory_bytes"),
                     "seconds": round(time.monotonic() - t0, 1), "log_tail": text[-1500:]}
    return out


def checks(facts: dict) -> list[dict]:
    """Named pass/fail lines from `run()`'s facts."""
    if "error" in facts:
        return [{"name": "GPU memory watchdog check ran", "ok": False, "detail": facts["error"]}]
    lift, at_cap = facts["jobs"]["lift"], facts["jobs"]["at_cap"]
    error = lift["error"] or ""
    stopped = (lift["state"] == "FAILED" and lift["attempts"] == 1 and "GpuMemoryExceeded" in error
               and "LIFTED" in lift["log_tail"] and "NOT STOPPED" not in lift["log_tail"])
    return [
        {"name": "a script that lifts its PyTorch cap is stopped by the GPU memory watchdog", "ok": stopped,
         "detail": {k: lift[k] for k in ("state", "attempts", "error", "log_tail")}},
        {"name": "a script that fills its PyTorch cap is not stopped",
         "ok": at_cap["state"] == "SUCCEEDED" and "AT CAP" in at_cap["log_tail"],
         "detail": {k: at_cap[k] for k in ("state", "error", "nvml_peak_memory_bytes", "log_tail")}},
    ]
