"""NVML sampling of one node's GPUs with nvidia-ml-py (imported as `pynvml`).

Invariants:
- pynvml is imported on first use, never at module import. The module used is, in
  order: the `nvml_module` argument (a module or an importable name), the env var
  FAIRGPU_NVML_MODULE, then `pynvml`. Tests inject a stand-in this way; the code
  path is the same on a real GPU.
- No driver (NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, any NVMLError at
  init, or no pynvml at all) is logged ONCE per reader and sampling returns None:
  nothing is made up. A figure one device does not support (power, utilisation on a
  MIG-enabled GPU) is None, never 0.
- Units leave here converted: utilisation 0-1, memory in bytes, power in watts.
- Per-process memory is matched to jobs by pid on the same node only.
"""
from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)
ENV_MODULE = "FAIRGPU_NVML_MODULE"


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    gpu_index: int
    used_memory_bytes: int | None  # None where NVML cannot tell (some containers)


@dataclass(frozen=True)
class DeviceSample:
    index: int
    uuid: str
    name: str
    utilisation_ratio: float | None
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float | None
    mig_enabled: bool | None  # None: the GPU has no MIG
    processes: tuple[ProcessSample, ...] = ()


@dataclass(frozen=True)
class NodeSample:
    hostname: str
    at: float  # epoch seconds
    driver_version: str
    devices: tuple[DeviceSample, ...]


def load_module(nvml_module=None):
    """The NVML module to use (see the module docstring); raises ImportError."""
    if nvml_module is not None and not isinstance(nvml_module, str):
        return nvml_module
    return importlib.import_module(nvml_module or os.environ.get(ENV_MODULE) or "pynvml")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlReader:
    """Samples the local GPUs; keeps whether it already said NVML is missing."""

    def __init__(self, nvml_module=None, hostname: str | None = None, clock=time.time) -> None:
        self._spec = nvml_module
        self._nvml = None
        self._warned = False
        self.hostname = hostname or socket.gethostname()
        self._clock = clock

    def _unavailable(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("no NVML on %s (%s): exporting no GPU figures for this node", self.hostname, why)

    def sample(self) -> NodeSample | None:
        try:
            nvml = self._nvml or load_module(self._spec)
        except ImportError as exc:
            self._unavailable(f"cannot import NVML module: {exc}")
            return None
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._unavailable(f"{type(exc).__name__}: {exc}")
            return None
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
            devices = tuple(_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount()))
        except nvml.NVMLError as exc:  # a GPU fell off the bus mid-read: report nothing this time
            log.warning("NVML read failed on %s: %s: %s", self.hostname, type(exc).__name__, exc)
            return None
        finally:
            nvml.nvmlShutdown()
        return NodeSample(self.hostname, self._clock(), driver, devices)


def _optional(nvml, read):
    try:
        return read()
    except nvml.NVMLError:  # NotSupported, or a MIG-enabled GPU's utilisation
        return None


def _device(nvml, index: int) -> DeviceSample:
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = nvml.nvmlDeviceGetMemoryInfo(h)
    util = _optional(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu)
    power_mw = _optional(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(h))
    mig = _optional(nvml, lambda: nvml.nvmlDeviceGetMigMode(h))
    procs = _optional(nvml, lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h)) or []
    return DeviceSample(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(h)),
        name=_text(nvml.nvmlDeviceGetName(h)),
        utilisation_ratio=None if util is None else util / 100.0,
        memory_used_bytes=int(mem.used),
        memory_total_bytes=int(mem.total),
        power_watts=None if power_mw is None else power_mw / 1000.0,
        mig_enabled=None if mig is None else bool(mig[0]),
        processes=tuple(ProcessSample(int(p.pid), index, _memory(p)) for p in procs),
    )


def _memory(proc) -> int | None:
    used = getattr(proc, "usedGpuMemory", None)
    return None if used is None else int(used)


_readers: dict[object, NvmlReader] = {}


def sample(nvml_module=None) -> NodeSample | None:
    """One sample of this node's GPUs, or None without NVML (said once per module)."""
    key = nvml_module if isinstance(nvml_module, (str, type(None))) else id(nvml_module)
    reader = _readers.get(key)
    if reader is None:
        reader = _readers[key] = NvmlReader(nvml_module)
    return reader.sample()


JobId = Hashable


def job_memory(sample: NodeSample, pids: Mapping[int, JobId]) -> dict[JobId, int]:
    """GPU memory each job's processes hold in this sample, summed over devices.

    `pids` maps this node's process ids to job ids. Processes NVML cannot measure
    count 0; jobs with no process on a GPU are absent.
    """
    out: dict[JobId, int] = {}
    for device in sample.devices:
        for proc in device.processes:
            job = pids.get(proc.pid)
            if job is not None:
                out[job] = out.get(job, 0) + (proc.used_memory_bytes or 0)
    return out


class PeakMemory:
    """Per-job peak GPU memory over successive samples (feed it job_memory results)."""

    def __init__(self) -> None:
        self.peak: dict[JobId, int] = {}

    def update(self, per_job: Mapping[JobId, int]) -> None:
        for job, used in per_job.items():
            if used > self.peak.get(job, -1):
                self.peak[job] = used

    def pop(self, job: JobId) -> int | None:
        """The job's peak, forgotten (call when it finishes)."""
        return self.peak.pop(job, None)


def peak_job_memory(samples: Iterable[NodeSample], pids: Mapping[int, JobId]) -> dict[JobId, int]:
    """Peak per-job memory over several samples of one node."""
    tracker = PeakMemory()
    for s in samples:
        tracker.update(job_memory(s, pids))
    return tracker.peak
