"""The Ray side: start, watch and stop job attempts; discover GPU capacity.

Invariants:
- Every admitted job becomes one Ray task with num_gpus = slices / slices_per_gpu,
  num_cpus = 0 (GPU slices bound concurrency, not CPUs), pinned to the node its
  placement chose by a hard NodeAffinitySchedulingStrategy, and max_retries = 0:
  re-placing a job is the scheduler's decision, not Ray's.
- The executor never touches the database; it reports Completions and the loop
  applies them. Ray is imported lazily and the Ray handle is injected (tests pass
  their own `ray` module and cluster).
- A task that failed because its worker or node died is an infrastructure failure
  (the job is requeued); an exception raised by the job itself is a job failure.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler.runtime.discovery import GPU_TYPE_PREFIX, DiscoveredNode, Probed
from scheduler.text import first_line
from scheduler.vocab import HOLD

log = logging.getLogger("fairgpu.executor")


def marker_time(results_dir: str, job_id: int, attempt: int) -> float | None:
    """When an attempt's task created its start marker (epoch seconds), or None."""
    from scheduler.runtime.jobfiles import started_path

    try:
        return os.stat(started_path(results_dir, job_id, attempt)).st_mtime
    except OSError:
        return None


@dataclass
class Attempt:
    job_id: int
    attempt: int
    ref: Any
    submitted_at: float
    cancelled: bool = False


@dataclass(frozen=True)
class Completion:
    job_id: int
    attempt: int
    ok: bool
    result: Any = None  # a scheduler.runtime.tasks.TaskResult when ok
    error: str | None = None
    infrastructure: bool = False  # worker/node died: requeue rather than fail
    cancelled: bool = False
    started_at: float | None = None  # when the task started (its start marker), if it did

    @property
    def refused(self) -> bool:
        """Ray could not place it (an infrastructure failure before the task started):
        not the job's fault, and it spends none of its retries."""
        return self.infrastructure and self.started_at is None and not self.cancelled


@dataclass
class RayExecutor:
    ray: Any  # the `ray` module, already initialised
    results_dir: str
    attempts: dict[int, Attempt] = field(default_factory=dict)
    _remote: dict[str, Any] = field(default_factory=dict)
    _options: dict[tuple, Any] = field(default_factory=dict)
    _ray_ids: dict[str, str] = field(default_factory=dict)  # node name -> Ray node id
    _probed: dict[str, Probed] = field(default_factory=dict)  # Ray node id -> its probe
    allow_unsandboxed: bool = False  # `fairgpu up --unsandboxed-scripts`: into every payload
    on_new_node: Any = None  # called with each DiscoveredNode once, when first probed

    def pending_in_ray(self, grace_s: float = 2.0) -> int:
        """Attempts handed to Ray more than `grace_s` ago that Ray has not started (each
        task creates its start marker file as it starts; see scheduler.runtime.tasks)."""
        from scheduler.runtime.jobfiles import started_path

        now = time.time()
        old = [a for a in list(self.attempts.values()) if now - a.submitted_at > grace_s]
        return sum(1 for a in old if not started_path(self.results_dir, a.job_id, a.attempt).exists())

    def warm_up(self, workers: int, num_gpus_each: float, timeout: float = 120.0) -> None:
        """Start `workers` GPU worker processes before jobs arrive, so a job's start is not
        a cold Python start (hold jobs reuse warm workers; Ray keeps GPU and CPU workers
        apart, so the warm-up tasks ask for a GPU fraction like the jobs will)."""
        from scheduler.runtime.tasks import TaskPayload

        fn = self._fn(HOLD)
        refs = [fn.options(num_gpus=num_gpus_each, num_cpus=0).remote(
            TaskPayload(job_id=-1, attempt=i, model=HOLD, seconds=0.5, num_gpus=num_gpus_each,
                        results_dir=self.results_dir, submitted_at=time.time(), mark_start=False, publish=False))
            for i in range(workers)]
        self.ray.wait(refs, num_returns=len(refs), timeout=timeout)

    # -- capacity ---------------------------------------------------------------------
    def discover(self, default_gpu_type: str = "T4") -> list[DiscoveredNode]:
        """The GPU nodes Ray has now, named by host, with their frameworks and sandbox
        (probed once per Ray node; see scheduler.runtime.discovery). Placement maps names to Ray
        ids from here. `on_new_node` hears of each node once, as it is first probed."""
        from scheduler.runtime.discovery import gpu_nodes, probe_nodes

        nodes = gpu_nodes(self.ray.nodes(), default_gpu_type, known={r: n for n, r in self._ray_ids.items()})
        new = {d.ray_id for d in nodes if d.ray_id not in self._probed}
        probed = {**self._probed, **probe_nodes(self.ray, sorted(new))}
        self._probed = {d.ray_id: probed.get(d.ray_id, Probed()) for d in nodes}  # forget nodes that left
        self._ray_ids = {d.name: d.ray_id for d in nodes}
        out = [replace(d, frameworks=self._probed[d.ray_id].frameworks, sandbox=self._probed[d.ray_id].sandbox)
               for d in nodes]
        if self.on_new_node is not None:
            for d in out:
                if d.ray_id in new:
                    self.on_new_node(d)
        return out

    def node_sandboxes(self) -> dict[str, Any]:
        """{node name: its NodeSandbox, or None where its probe failed}, as last discovered."""
        probed, ray_ids = self._probed, self._ray_ids
        return {name: probed[rid].sandbox for name, rid in ray_ids.items() if rid in probed}

    # -- tasks ------------------------------------------------------------------------
    @staticmethod
    def _kind(model: str) -> str:
        return HOLD if model == HOLD else "workload"

    def _fn(self, model: str):
        kind = self._kind(model)
        if kind not in self._remote:
            from scheduler.runtime.tasks import run_job

            # hold jobs may reuse a warm worker; real workloads get a fresh process each
            # time, so a slice's GPU memory cap (set per process) never leaks to the next job
            self._remote[kind] = self.ray.remote(max_calls=0 if kind == HOLD else 1)(run_job)
        return self._remote[kind]

    def start(self, payload, *, node: str) -> None:
        """Hand one attempt (a `scheduler.runtime.tasks.TaskPayload`) to Ray, pinned to `node`."""
        submitted = time.time()
        payload = replace(payload, results_dir=self.results_dir, submitted_at=submitted,
                          allow_unsandboxed=self.allow_unsandboxed)
        ref = self._shaped(payload.model, node, payload.num_gpus).remote(payload)
        self.attempts[payload.job_id] = Attempt(payload.job_id, payload.attempt, ref, submitted)

    def _shaped(self, model: str, node: str, num_gpus: float):
        """The remote function with a job's options, built once per (kind, node, share):
        `options()` validates every option and builds a wrapper class each call, which
        cost more than the submission itself. Tasks are named after the function
        (`run_job`); the job id is in the payload and in the start marker's name."""
        key = (self._kind(model), node, num_gpus)
        fn = self._options.get(key)
        if fn is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            ray_id = self._ray_ids.get(node)
            if ray_id is None:
                raise LookupError(f"Ray has no node {node}")
            fn = self._fn(model).options(
                num_gpus=num_gpus, num_cpus=0, max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=ray_id, soft=False),
            )
            self._options[key] = fn
        return fn

    def is_running(self, job_id: int) -> bool:
        """Whether the job's tracked attempt is still running in Ray."""
        att = self.attempts.get(job_id)
        if att is None:
            return False
        ready, _ = self.ray.wait([att.ref], num_returns=1, timeout=0)
        return not ready

    def tracked(self) -> dict[int, int]:
        """{job id: attempt} of the attempts handed to Ray and not yet reported."""
        return {j: a.attempt for j, a in list(self.attempts.items())}

    def task_started_at(self, job_id: int) -> float | None:
        """When the tracked attempt's task started (its start marker's time), or None."""
        att = self.attempts.get(job_id)
        return None if att is None else marker_time(self.results_dir, att.job_id, att.attempt)

    def cancel(self, job_id: int) -> None:
        att = self.attempts.get(job_id)
        if att is None or att.cancelled:
            return
        att.cancelled = True
        try:
            self.ray.cancel(att.ref, force=True)
        except Exception as exc:  # already finished, or its worker is gone
            log.debug("cancel of job %s: %s", job_id, exc)

    def forget(self, job_id: int) -> None:
        att = self.attempts.pop(job_id, None)
        if att is not None:
            self._unmark(att)

    def _unmark(self, att: Attempt) -> None:
        from scheduler.runtime.jobfiles import started_path

        started_path(self.results_dir, att.job_id, att.attempt).unlink(missing_ok=True)

    def wait(self, timeout: float, every: bool = False) -> bool:
        """Block until some attempt finishes (with `every`, until all have) or `timeout`
        passes; True if some attempt has finished."""
        refs = [a.ref for a in self.attempts.values()]
        if not refs:
            time.sleep(timeout)
            return False
        ready, _ = self.ray.wait(refs, num_returns=len(refs) if every else 1, timeout=timeout)
        return bool(ready)

    def wait_gone(self, job_ids, timeout: float) -> None:
        """Wait (bounded) for cancelled attempts to end, so their slices are free in Ray."""
        refs = [self.attempts[j].ref for j in job_ids if j in self.attempts]
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=timeout)

    def poll(self) -> list[Completion]:
        if not self.attempts:
            return []
        by_ref = {a.ref: a for a in self.attempts.values()}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        if not ready:
            return []
        try:  # the common case, all succeeded: one call for the lot
            results = self.ray.get(ready, timeout=30)
        except Exception:
            results = None  # some failed: look at each on its own
        out = []
        for i, ref in enumerate(ready):
            att = by_ref[ref]
            self.attempts.pop(att.job_id, None)
            if results is not None:  # the task removed its own start marker as it returned
                out.append(Completion(att.job_id, att.attempt, True, result=results[i]))
                continue
            started = marker_time(self.results_dir, att.job_id, att.attempt)
            self._unmark(att)
            out.append(replace(self._complete(att, ref), started_at=started))
        return out

    def _complete(self, att: Attempt, ref) -> Completion:
        exc_mod = self.ray.exceptions
        try:
            result = self.ray.get(ref, timeout=30)
            return Completion(att.job_id, att.attempt, True, result=result)
        except exc_mod.TaskCancelledError:
            return Completion(att.job_id, att.attempt, False, error="cancelled", cancelled=True)
        except exc_mod.RayTaskError as exc:
            if att.cancelled:
                return Completion(att.job_id, att.attempt, False, error="cancelled", cancelled=True)
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return Completion(att.job_id, att.attempt, False, error=f"{type(cause).__name__}: {cause}"[:2000])
        except exc_mod.RayError as exc:
            if att.cancelled:
                return Completion(att.job_id, att.attempt, False, error="cancelled", cancelled=True)
            first = first_line(exc, "")
            return Completion(att.job_id, att.attempt, False, error=f"{type(exc).__name__}: {first}"[:2000],
                              infrastructure=True)

    def shutdown(self) -> None:
        for job_id in list(self.attempts):
            self.cancel(job_id)


def init_ray(ray, *, address: str | None, gpus: int | None, gpu_type: str, num_cpus: int | None = None):
    """Connect to a cluster, or start a local Ray with `gpus` logical GPUs of `gpu_type`;
    returns what `ray.init` returned (its `address_info` names the session directory),
    None if Ray was already initialised.

    A local Ray listens on loopback only (see `loopback_only`); a cluster's addresses
    are the cluster's business."""
    if ray.is_initialized():
        return None
    if address:
        try:
            return ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, or its own auth errors
            raise RayUnavailable(f"cannot join the Ray cluster at {address}: {first_line(exc)[:300]}"
                                 " (a cluster started with RAY_AUTH_MODE=token needs it here too, with its"
                                 " token; see docs/deploy.md)") from exc
    resources = {f"{GPU_TYPE_PREFIX}{gpu_type}": float(gpus)} if gpus else None
    with loopback_only(ray):
        # address="local": always start a Ray of our own. Without it, ray.init() joins the
        # cluster that /tmp/ray/ray_current_cluster names (left by any `ray start` here).
        return ray.init(address="local", num_gpus=gpus, num_cpus=num_cpus, resources=resources,
                        include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                        _node_ip_address=LOOPBACK)


class RayUnavailable(RuntimeError):
    """`fairgpu up --ray-address` could not join the cluster (said in one line)."""


LOOPBACK = "127.0.0.1"


@contextmanager
def loopback_only(ray):
    """While a local Ray starts, put Ray in its local-only mode (the one it uses on macOS
    and Windows), so the node's address is 127.0.0.1: the GCS, the raylet, the agents
    and every worker then listen on 127.0.0.1 only (checked with Ray 2.60; see
    docs/deploy.md). Without it, Ray turns `_node_ip_address="127.0.0.1"` into the
    machine's address and its gRPC servers listen on every interface. Ray reads the
    mode only to find the node's address, which the started node then keeps."""
    constants = sys.modules.get(f"{ray.__name__}._private.ray_constants")
    if constants is None or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        log.warning("this Ray has no local-only mode; its servers may listen on every interface")
        yield
        return
    saved = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved
