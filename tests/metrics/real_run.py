"""A real fairgpu run under contended load, for the end-to-end metrics test.

`RealRun(tmp).start()` starts the embedded server in this process (SQLite, a local
Ray with 2 logical T4s = 8 slices, the real loop, API, /metrics and NVML sampler
actors reading the stand-in fake_nvml), then drives it through the real HTTP API:
- a conv6 PyTorch training job (so the workload panels have a finished run);
- three institutions weighted 1:2:3 keep a backlog of short `hold` jobs (1-2 s) on
  the 8 slices until `stop()`;
- `late_after_s` later an institution with a guarantee arrives and keeps a backlog
  too: it is below its guarantee with every slice taken, so the loop preempts
  (reclaim) the borrowers' jobs. So that every slice is indeed taken when it comes, the
  holds submitted in the few seconds before are long (10 s).
`wait_eventful()` blocks until all of that has happened. `stop()` stops the flood,
the server (and Ray) and puts the environment back.

Invariants: the environment the Ray workers need (PYTHONPATH with this directory,
FAKE_NVML_STATE) is set before Ray starts, since workers inherit it at `ray.init`;
a Ray that an earlier test module left initialised is shut down first.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import httpx

import fake_nvml
from scheduler.vocab import FINAL_STATES

HERE = Path(__file__).resolve().parent
WEIGHTS = {"inst-a": 1, "inst-b": 2, "inst-c": 3}
LATE, LATE_GUARANTEE = "inst-late", 2  # the others then share 6 slices 1:2:3
WORKLOAD = {"model": "conv6", "framework": "pytorch", "mode": "train", "slices": 1, "steps": 3, "batch_size": 4}
FINAL = {s.value for s in FINAL_STATES}


class RealRun:
    def __init__(self, tmp: Path, *, backlog: int = 4, hold_s: tuple[float, float] = (1.0, 2.0),
                 late_after_s: float = 6.0, seed: int = 5) -> None:
        self.tmp = Path(tmp)
        self.backlog, self.hold_s, self.late_after_s = backlog, hold_s, late_after_s
        self.settle_s, self.long_hold_s = 4.0, 10.0  # long holds in the settle_s before late_after_s
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flood, name="real-run-flood", daemon=True)
        self._saved_env: dict[str, str | None] = {}
        self.server = None
        self.clients: dict[str, httpx.Client] = {}
        self._watch: httpx.Client | None = None
        self.workload_job: int | None = None
        self.late_arrived = threading.Event()
        self.submitted = 0
        self.scrape_token: str | None = None
        self.error: BaseException | None = None

    @property
    def target(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "RealRun":
        import ray

        from scheduler.server import Embedded

        self._set_env()
        if ray.is_initialized():  # an earlier module's Ray: ours must start with this environment
            ray.shutdown()
        self.server = Embedded(db_url=f"sqlite:///{self.tmp / 'fg.db'}", state_dir=self.tmp, gpus=2,
                               port=0, usage_period_s=1.0, period_s=0.5, nvml_module="fake_nvml")
        try:
            self.server.start_background()
            self.scrape_token = self._scrape_token()
            for name, weight in WEIGHTS.items():
                self.clients[name] = self._account(name, weight)
            [self.workload_job] = self._submit("inst-a", WORKLOAD)
            # the flood thread owns self.clients; this one is for the test thread's reads
            self._watch = httpx.Client(base_url=self.server.url, headers=self.clients["inst-a"].headers,
                                       timeout=30)
            self.t0 = time.monotonic()
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        for c in [*self.clients.values(), *filter(None, [self._watch])]:
            c.close()
        if self.server is not None:
            self.server.stop()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def _set_env(self) -> None:
        state = self.tmp / "nvml-state.json"
        state.write_text(json.dumps({"init_error": None, "devices": [
            fake_nvml.t4(0, util=71, used=5 << 30), fake_nvml.t4(1, util=38, used=3 << 30, power_mw=28000)]}))
        self._saved_env = {k: os.environ.get(k) for k in ("FAKE_NVML_STATE", "PYTHONPATH")}
        os.environ["FAKE_NVML_STATE"] = str(state)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), self._saved_env["PYTHONPATH"]]))

    # -- driving the API ------------------------------------------------------------
    def _account(self, name: str, weight: float, **kw) -> httpx.Client:
        from scheduler.services.accounts import add_account
        from scheduler.services.auth import issue_token
        from scheduler.store import session_scope

        with session_scope(self.server.engine) as s:
            add_account(s, name, weight=weight, **kw)
        with session_scope(self.server.engine) as s:
            token = issue_token(s, account=name, name="e2e", expires_s=None, at=self.server.clock())
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def _scrape_token(self) -> str:
        """A token for /metrics only, as `fairgpu admin token issue --scrape` makes (per-account
        series need one, docs/metrics.md)."""
        from scheduler.services.auth import SCRAPE, issue_token
        from scheduler.store import session_scope

        with session_scope(self.server.engine) as s:
            return issue_token(s, account=None, name="prometheus", expires_s=None, at=self.server.clock(),
                               scope=SCRAPE)

    def _submit(self, name: str, body: dict, n: int = 1) -> list[int]:
        ids = []
        for _ in range(n):
            r = self.clients[name].post("/v1/jobs", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"{name}: HTTP {r.status_code} {r.text[:200]}")
            ids.append(r.json()["id"])
            self.submitted += 1
        return ids

    def _flood(self) -> None:
        """After each new cycle (at most 4 times a second), top every institution's queue up
        to `backlog` pending jobs."""
        seen = 0.0
        try:
            while not self._stop.is_set():
                if not self.late_arrived.is_set() and time.monotonic() - self.t0 >= self.late_after_s:
                    self.clients[LATE] = self._account(LATE, 1, guaranteed=LATE_GUARANTEE)
                    self.late_arrived.set()
                view = self.server.publisher.view()
                if view is None or view.at <= seen:  # not yet a cycle since the last top-up
                    self._stop.wait(0.1)
                    continue
                seen = time.time()
                pending = {a.name: sum(a.pending_by_reason.values()) for a in view.accounts}
                # In the few seconds before the late institution arrives the holds are long:
                # every slice is taken when it comes, so its guarantee can only be reclaimed
                # (the preemption the test waits for does not hang on a race with jobs ending).
                since = time.monotonic() - self.t0
                long = self.late_after_s - self.settle_s <= since < self.late_after_s
                for name in self.clients:
                    missing = self.backlog - pending.get(name, 0)
                    if missing > 0:
                        seconds = self.long_hold_s if long else round(self._rng.uniform(*self.hold_s), 2)
                        self._submit(name, {"model": "hold", "slices": 1, "seconds": seconds}, missing)
                self._stop.wait(0.25)
        except BaseException as exc:  # surfaced by wait_eventful
            self.error = exc

    # -- what the test waits for ----------------------------------------------------
    def preemptions(self) -> float:
        return sum(s.value for m in self.server.metrics.preemptions.collect() for s in m.samples
                   if s.name.endswith("_total"))

    def workload_state(self) -> str:
        return self._watch.get(f"/v1/jobs/{self.workload_job}").json()["state"]

    def wait_eventful(self, timeout_s: float = 90.0) -> None:
        """Until the late institution arrived, a job was preempted and the finished workload is
        published (the publisher refreshes workload results every few seconds)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise RuntimeError("the flood stopped") from self.error
            state = self.workload_state()
            if state in FINAL and state != "SUCCEEDED":
                raise RuntimeError(f"the {WORKLOAD['model']} job ended {state}")
            view = self.server.publisher.view()
            if self.late_arrived.is_set() and self.preemptions() > 0 and view is not None and view.workloads:
                return
            time.sleep(0.25)
        raise TimeoutError(f"after {timeout_s:.0f} s: late arrived {self.late_arrived.is_set()}, "
                           f"preemptions {self.preemptions()}, workload {self.workload_state()}")
