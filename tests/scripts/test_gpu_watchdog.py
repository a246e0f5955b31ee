"""The GPU memory watchdog (scheduler/runtime/gpu_watchdog.py), fed by the NVML stand-in
(tests/metrics/fake_nvml.py). These tests cover the limit and its margin, the grace on a
virtual clock, and that only the attempt's processes count. Then scripts.run kills a
process tree that stays over, the grandchild that left its session included. Last, the
same happens through a live server: a job whose processes the stand-in reports over
their share ends FAILED with the measured figure in its reason. It is not requeued, and
a job under its share beside it succeeds."""
from __future__ import annotations

import io
import json
import os
import pickle
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import fake_nvml
from scheduler.runtime import archive, scripts
from scheduler.runtime.gpu_watchdog import GRACE_S, MARGIN_FLOOR_BYTES, GpuLimit, GpuWatchdog, Violation, margin_for
from workloads.measure import NvmlProcessPeak

MIB, GIB = 1 << 20, 1 << 30
T4 = 15 * GIB  # fake_nvml.t4's total memory
ATTEMPT, OTHER = 101, 202  # pids: the attempt's process, another job's


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def gpu():
    """One T4 on the stand-in; `hold(pid, bytes)` sets what NVML lists for a process."""
    procs: dict[int, int] = {}

    def hold(pid: int, used: int | None) -> None:
        if used is None:
            procs.pop(pid, None)
        else:
            procs[pid] = used
        fake_nvml.configure([fake_nvml.t4(0, procs=procs.items())])

    hold(OTHER, 9 * GIB)  # another job on the same GPU, far over this attempt's share
    yield hold
    fake_nvml.configure()


def _watched(limit: GpuLimit, clock: Clock):
    """A watchdog fed by the sampler that measures the attempt (one NVML session); the
    test takes each reading itself (`sampler.sample()`) instead of the sampler's thread."""
    dog = GpuWatchdog(limit, clock)
    sampler = NvmlProcessPeak(interval_s=3600, pids=lambda: {ATTEMPT}, nvml_module=fake_nvml, on_sample=dog.observe)
    sampler.start()
    return sampler, dog


def _readings(sampler, clock: Clock, hold, used: int | None, seconds: float, every: float = 0.5):
    hold(ATTEMPT, used)
    end = clock.t + seconds
    while clock.t < end:
        clock.t += every
        sampler.sample()


# ------------------------------------------------------------------ the limit
def test_the_limit_is_the_share_plus_its_margin():
    one_slice = GpuLimit.for_share(0.25, [T4])
    assert one_slice.share_bytes == T4 // 4
    assert one_slice.margin_bytes == MARGIN_FLOOR_BYTES == 512 * MIB  # 5 % of 3.75 GiB is under the floor
    assert one_slice.allowed_bytes == T4 // 4 + 512 * MIB and one_slice.grace_s == GRACE_S
    half_h100 = GpuLimit.for_share(0.5, [80 * GIB])
    assert half_h100.margin_bytes == margin_for(40 * GIB) == 2 * GIB  # 5 % of a large share
    two_gpus = GpuLimit.for_share(1.0, [T4, T4])  # whole GPUs: more than they hold
    assert two_gpus.share_bytes == 2 * T4 and two_gpus.allowed_bytes > 2 * T4
    assert GpuLimit.for_share(0.25, []) is None  # no NVML: nothing to enforce
    assert GpuLimit.for_share(0.0, [T4]) is None


# ------------------------------------------------------------------ the watchdog on the stand-in
def test_under_the_share_there_is_never_a_violation(gpu):
    clock = Clock()
    sampler, dog = _watched(GpuLimit.for_share(0.25, [T4]), clock)
    _readings(sampler, clock, gpu, 3 * GIB, 60)
    _readings(sampler, clock, gpu, GpuLimit.for_share(0.25, [T4]).allowed_bytes, 60)  # at the limit is not over
    assert sampler.stop() == 4 * GIB + 256 * MIB  # the peak is measured as before
    assert dog.violation is None  # another job's 9 GiB on the same GPU is not this attempt's


def test_over_for_less_than_the_grace_costs_nothing_and_the_count_starts_again(gpu):
    clock, limit = Clock(), GpuLimit.for_share(0.25, [T4], grace_s=5.0)
    sampler, dog = _watched(limit, clock)
    for _ in range(3):
        _readings(sampler, clock, gpu, 8 * GIB, 4.5)  # over, but for 4.5 s at most
        _readings(sampler, clock, gpu, 1 * GIB, 0.5)
    _readings(sampler, clock, gpu, 8 * GIB, 4.0)
    _readings(sampler, clock, gpu, None, 0.5)  # NVML lists none of its processes: not over
    _readings(sampler, clock, gpu, 8 * GIB, 4.0)
    sampler.stop()
    assert dog.violation is None


def test_over_for_longer_than_the_grace_is_a_violation_with_the_figures(gpu):
    clock, limit = Clock(), GpuLimit.for_share(0.25, [T4], grace_s=5.0)
    sampler, dog = _watched(limit, clock)
    _readings(sampler, clock, gpu, 1 * GIB, 3)
    _readings(sampler, clock, gpu, 5 * GIB, 2)
    assert dog.violation is None
    _readings(sampler, clock, gpu, 6 * GIB, 2)
    assert dog.violation is None  # over for 3.5 s so far
    _readings(sampler, clock, gpu, 5 * GIB, 2.5)
    v = dog.violation
    assert v is not None and v.peak_bytes == 6 * GIB
    assert (v.allowed_bytes, v.share_bytes, v.margin_bytes) == (limit.allowed_bytes, T4 // 4, 512 * MIB)
    assert v.seconds_over == pytest.approx(5.5)  # over since the reading at 3.5 s, found at 9 s
    _readings(sampler, clock, gpu, 0, 10)
    assert dog.violation == v  # it stays
    sampler.stop()
    reason = v.reason()
    assert "GPU memory" in reason and "6.00 GiB" in reason and str(6 * GIB) in reason
    assert "4.25 GiB" in reason and "3.75 GiB" in reason and "512 MiB" in reason and "5.5 s" in reason


def test_the_failure_travels_through_ray_with_its_figures():
    v = Violation(6 * GIB, 4 * GIB, 3 * GIB + 512 * MIB, 512 * MIB, 5.5)
    exc = pickle.loads(pickle.dumps(scripts.GpuMemoryExceeded(v)))
    assert isinstance(exc, scripts.ScriptFailed) and exc.violation == v and str(exc) == v.reason()


# ------------------------------------------------------------------ scripts.run kills the tree
HOG = """
import os, subprocess, sys, time
# a grandchild that leaves the session, as a script escaping a process-group kill would
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", sys.argv[1]], start_new_session=True)
print("holding", flush=True)
time.sleep(120)
"""


def test_run_kills_a_process_tree_that_stays_over_its_limit(tmp_path, monkeypatch):
    marker = f"gpu-hog-{uuid.uuid4().hex}"
    fake_nvml.configure([fake_nvml.t4(0, procs=[(f"cmdline:{marker}", 3 * GIB)])])  # each process: 3 GiB
    monkeypatch.setenv("FAIRGPU_NVML_MODULE", "fake_nvml")
    (tmp_path / "hog.py").write_text(HOG)
    log = io.StringIO()
    limit = GpuLimit(4 * GIB, 256 * MIB, grace_s=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(scripts.GpuMemoryExceeded) as caught:
            scripts.run([sys.executable, "hog.py", marker], cwd=tmp_path, env=dict(os.environ), log=log,
                        stop_requested=lambda: False, gpu_limit=limit)
    finally:
        fake_nvml.configure()
    assert time.monotonic() - started < 30  # not the 120 s it meant to run
    v = caught.value.violation
    assert v.peak_bytes == 6 * GIB and v.allowed_bytes == limit.allowed_bytes and v.seconds_over > 1.0
    assert "6.00 GiB" in str(caught.value)
    assert "holding" in log.getvalue() and "fairgpu: killed: GPU memory" in log.getvalue()
    assert _alive(marker) == []  # the grandchild in its own session too


def _alive(marker: str, wait_s: float = 5.0) -> list[int]:
    """Processes with `marker` on their command line that are not zombies, once none are
    left or `wait_s` has passed (a SIGKILLed process takes a moment to go)."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for pid in fake_nvml._matching(marker):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# ------------------------------------------------------------------ through a live server
SCRIPT = """
import sys, time
print("running", sys.argv[1], flush=True)
time.sleep(float(sys.argv[2]))
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server (1 logical T4 = 4 slices) whose Ray workers read the stand-in: the
    processes of a job run with HOG on their command line hold 6 GiB, those with FINE 3.5 GiB."""
    import ray

    from service_helpers import start_server

    tmp = tmp_path_factory.mktemp("gpu-watchdog")
    hog, fine = f"hog-{uuid.uuid4().hex}", f"fine-{uuid.uuid4().hex}"
    state = tmp / "nvml.json"
    device = fake_nvml.t4(0, util=0, used=0, procs=[(f"cmdline:{hog}", 6 * GIB), (f"cmdline:{fine}", 3584 * MIB)])
    state.write_text(json.dumps({"init_error": None, "devices": [device]}))
    metrics = str(Path(fake_nvml.__file__).parent)
    saved = {k: os.environ.get(k) for k in ("FAIRGPU_NVML_MODULE", "FAKE_NVML_STATE", "PYTHONPATH")}
    os.environ.update(FAIRGPU_NVML_MODULE="fake_nvml", FAKE_NVML_STATE=str(state),
                      PYTHONPATH=os.pathsep.join(filter(None, [metrics, saved["PYTHONPATH"]])))
    if ray.is_initialized():  # an earlier module's Ray: the workers must inherit this environment
        ray.shutdown()
    s = start_server(tmp, gpus=1)
    try:
        yield s, hog, fine
    finally:
        s.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_job_over_its_share_ends_failed_with_the_measured_figure(server, tmp_path):
    from service_helpers import account, jobs, wait_states

    s, hog, fine = server
    lab = account(s, "lab-gpu", allow_scripts=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.py").write_text(textwrap.dedent(SCRIPT))
    ids = {}
    for name, marker, seconds in (("hog", hog, 120), ("fine", fine, GRACE_S + 3)):
        r = lab.post("/v1/uploads", content=archive.pack(work), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text  # an upload serves one job
        r = lab.post("/v1/jobs", json={"model": "script", "slices": 1, "upload": r.json()["upload"],
                                      "command": [sys.executable, "job.py", marker, str(seconds)]})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    done = wait_states(lab, ids.values(), timeout=90)  # the hog would run 120 s
    bad, good = done[ids["hog"]], done[ids["fine"]]
    assert bad["state"] == "FAILED" and bad["attempts"] == 1, bad  # failed, not requeued
    assert "GpuMemoryExceeded" in bad["error"] and "GPU memory" in bad["error"]
    assert "6.00 GiB" in bad["error"] and str(6 * GIB) in bad["error"]  # the measured figure
    assert "4.25 GiB" in bad["error"]  # 1 slice of 15 GiB split 4 ways, plus 512 MiB
    assert good["state"] == "SUCCEEDED", good
    assert good["result"]["nvml_peak_memory_bytes"] == 3584 * MIB
    logs = lab.get(f"/v1/jobs/{ids['hog']}/logs")
    assert "fairgpu: killed: GPU memory" in logs.text
    assert _alive(hog) == []
    assert jobs(lab)[ids["hog"]]["state"] == "FAILED"  # and it stays so
