"""The end-to-end half of the GPU check: `fairgpu up`, two institutions' jobs on slices of
one GPU, and /metrics scraped while they run and after.

Invariants:
- fairgpu is driven only as a user would: `python -m scheduler.cli up` in its own process
  group, then its HTTP API with the admin token it wrote and the institutions' tokens.
  This module needs the standard library and httpx, nothing of fairgpu's.
- The server is stopped on every path (SIGTERM, then SIGKILL of its group after a grace),
  and its whole output is kept in `up.log`.
- Its local Ray is its own (`fairgpu up` starts Ray with address="local"), and RAY_TMPDIR
  points at a fresh directory (removed after), so nothing is left in /tmp/ray.
- `run()` returns facts (what ran where, what the scrapes held); `checks()` turns them into
  named pass/fail lines. On a GPU the NVML series and per-job GPU memory are asserted;
  without one (`gpu=False`) they are recorded and not asserted.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

UP_LINE = re.compile(r"fairgpu is up: API (http://\S+)")
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
INSTITUTIONS = ("inst-a", "inst-b")
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}
NVML_SERIES = ("fairgpu_node_nvml_available", "fairgpu_gpu_memory_used_bytes", "fairgpu_gpu_memory_total_bytes",
               "fairgpu_gpu_utilisation_ratio", "fairgpu_gpu_power_watts")


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), dict(LABEL.findall(m.group(3) or "")), float(m.group(4))))
    return out


def values(samples, name: str, **labels) -> list[float]:
    return [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]


class Server:
    """`fairgpu up --port 0` in its own process group; its output read line by line."""

    def __init__(self, state: Path, extra: list[str], python: str = sys.executable):
        self.state = state
        self.cmd = [python, "-m", "scheduler.cli", "up", "--db", f"sqlite:///{state / 'fg.db'}",
                    "--state-dir", str(state), "--port", "0", *extra]
        self.lines: list[str] = []
        self.ray_tmp = tempfile.mkdtemp(prefix="fgray-", dir="/tmp")  # short: Ray's socket paths live in it
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": self.ray_tmp}
        env.pop("RAY_ADDRESS", None)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_up(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = UP_LINE.search(line)
                if m:
                    return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"`fairgpu up` exited {self.proc.returncode}: {self._last()}")
            time.sleep(0.2)
        raise RuntimeError(f"`fairgpu up` not serving after {timeout_s:.0f} s: {self._last()}")

    def _last(self) -> str:
        return " | ".join(self.lines[-3:]) or "no output"

    def stop(self, grace_s: float = 60.0) -> int | None:
        """SIGTERM (the server requeues running jobs and stops Ray), SIGKILL after `grace_s`."""
        try:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of its group (Ray's processes)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
            self._reader.join(10)
            (self.state / "up.log").write_text("\n".join(self.lines) + "\n")
            shutil.rmtree(self.ray_tmp, ignore_errors=True)


def run(state: Path, *, gpu: bool, jobs_each: int, job: dict, timeout_s: float) -> dict:
    """Start the server, run `jobs_each` copies of `job` for each institution, scrape; facts."""
    state.mkdir(parents=True, exist_ok=True)
    extra = [] if gpu else ["--gpus", "1", "--slices-per-gpu", str(2 * jobs_each)]
    server = Server(state, extra)
    facts: dict = {"command": " ".join(server.cmd[1:]), "job": job, "jobs_each": jobs_each, "seconds": {}}
    t0 = time.monotonic()
    try:
        url = server.wait_up(timeout_s)
        facts["seconds"]["up"] = round(time.monotonic() - t0, 1)
        token = (state / "admin.token").read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as admin:
            clients = {name: _institution(admin, name) for name in INSTITUTIONS}
            try:
                driven = _drive(admin, clients, jobs_each, job, timeout_s)
                facts["seconds"].update(driven.pop("seconds"))
                facts.update(driven)
            finally:
                for c in clients.values():
                    c.close()
    except (RuntimeError, OSError, ValueError, KeyError, httpx.HTTPError) as exc:  # a fact: checks() reports it
        facts["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        t1 = time.monotonic()
        facts["server_exit"] = server.stop()
        facts["seconds"]["stop"] = round(time.monotonic() - t1, 1)
    return facts


def _institution(admin: httpx.Client, name: str) -> httpx.Client:
    r = admin.post("/v1/admin/accounts", json={"name": name, "weight": 1})
    r.raise_for_status()
    r = admin.post("/v1/admin/tokens", json={"account": name})
    r.raise_for_status()
    return httpx.Client(base_url=str(admin.base_url), timeout=30,
                        headers={"Authorization": f"Bearer {r.json()['token']}"})


def _drive(admin: httpx.Client, clients: dict, jobs_each: int, job: dict, timeout_s: float) -> dict:
    t0 = time.monotonic()
    ids: dict[int, str] = {}
    for name, c in clients.items():
        for _ in range(jobs_each):
            r = c.post("/v1/jobs", json={**job, "slices": 1})
            if r.status_code != 201:
                raise RuntimeError(f"{name}: submit answered {r.status_code} {r.text[:200]}")
            ids[r.json()["id"]] = name
    together: set[str] = set()  # the most institutions seen running on one GPU at one moment
    best_running: tuple[int, list] = (-1, [])  # the scrape with the most GPU memory in use
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {i: admin.get(f"/v1/jobs/{i}").json() for i in ids}
        running = [r for r in rows.values() if r["state"] == "RUNNING"]
        if running:
            samples = parse_metrics(admin.get("/metrics").text)
            used = int(sum(values(samples, "fairgpu_gpu_memory_used_bytes")))
            if used > best_running[0]:
                best_running = (used, samples)
            insts = {ids[r["id"]] for r in running}
            if len({(r["node"], r["gpu"]) for r in running}) == 1 and len(insts) > len(together):
                together = insts
        if all(r["state"] in FINAL for r in rows.values()):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not finished after {timeout_s:.0f} s: "
                               + ", ".join(f"{i} {r['state']}" for i, r in rows.items()))
        time.sleep(0.3)
    jobs_s = round(time.monotonic() - t0, 1)
    # the publisher refreshes workload figures every few seconds after a job ends
    final: list = []
    while time.monotonic() < deadline:
        final = parse_metrics(admin.get("/metrics").text)
        if sum(values(final, "fairgpu_workload_runs_total")) >= len(ids):
            break
        time.sleep(0.5)
    return {
        "seconds": {"jobs": jobs_s, "published": round(time.monotonic() - t0 - jobs_s, 1)},
        "jobs": [{"id": i, "institution": ids[i], "state": r["state"], "node": r["node"], "gpu": r["gpu"],
                  "error": r["error"], **_figures(r.get("result") or {})} for i, r in rows.items()],
        "shared_gpu_by": sorted(together),
        "scrape_running": _series(best_running[1]),
        "scrape_final": _series(final),
    }


def _figures(result: dict) -> dict:
    keys = ("device", "device_name", "samples_per_second", "peak_memory_bytes", "nvml_peak_memory_bytes",
            "memory_fraction")
    return {k: result.get(k) for k in keys}


def _series(samples: list) -> dict:
    """The series the checks read, as {name: [[labels, value], ...]}."""
    keep = (*NVML_SERIES, "fairgpu_capacity_slices", "fairgpu_workload_runs_total",
            "fairgpu_workload_peak_memory_bytes", "fairgpu_account_admissions_total",
            "fairgpu_account_running_jobs")
    out: dict[str, list] = {}
    for name, labels, value in samples:
        if name in keep:
            out.setdefault(name, []).append([labels, value])
    return out


def checks(facts: dict, *, gpu: bool) -> list[dict]:
    """Named pass/fail lines from `run()`'s facts."""
    out: list[dict] = []

    def check(name: str, ok: bool, detail) -> None:
        out.append({"name": name, "ok": bool(ok), "detail": detail})

    if "error" in facts:
        check("e2e ran", False, facts["error"])
        return out
    jobs = facts["jobs"]
    check("every job succeeded", all(j["state"] == "SUCCEEDED" for j in jobs),
          [f"{j['id']} {j['institution']} {j['state']} {j['error'] or ''}".strip() for j in jobs])
    check("both institutions ran on slices of one GPU at once", set(facts["shared_gpu_by"]) == set(INSTITUTIONS),
          facts["shared_gpu_by"])
    fin = facts["scrape_final"]

    def total(name: str, series=fin, **labels) -> float:
        return sum(v for lab, v in series.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))

    check("per-account series for both institutions",
          all(total("fairgpu_account_admissions_total", account=i) >= facts["jobs_each"] for i in INSTITUTIONS),
          {i: total("fairgpu_account_admissions_total", account=i) for i in INSTITUTIONS})
    check("workload runs counted", total("fairgpu_workload_runs_total") >= len(jobs),
          fin.get("fairgpu_workload_runs_total"))
    if not gpu:
        return out
    run_ = facts["scrape_running"]
    check("NVML available on the node", fin.get("fairgpu_node_nvml_available")
          and all(v == 1 for _, v in fin["fairgpu_node_nvml_available"]), fin.get("fairgpu_node_nvml_available"))
    check("GPU memory series", total("fairgpu_gpu_memory_total_bytes") > 0 and
          total("fairgpu_gpu_memory_used_bytes", run_) > 0,
          {"total": total("fairgpu_gpu_memory_total_bytes"), "used_while_running":
           total("fairgpu_gpu_memory_used_bytes", run_)})
    check("jobs ran on the GPU", all(j["device"] == "gpu" for j in jobs), [j["device_name"] for j in jobs])
    check("per-job GPU memory (NVML, per process)", all((j["nvml_peak_memory_bytes"] or 0) > 0 for j in jobs),
          [j["nvml_peak_memory_bytes"] for j in jobs])
    check("workload peak GPU memory series", total("fairgpu_workload_peak_memory_bytes", device="gpu") > 0,
          fin.get("fairgpu_workload_peak_memory_bytes"))
    return out
