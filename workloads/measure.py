"""Measurement helpers: the percentile, peak RSS, NVML per-process GPU memory.

Invariants:
- No framework imports; `pynvml` is imported lazily, only when a GPU run asks.
- A figure that cannot be measured is None, never an estimate. The reason is
  logged once per process (`fairgpu.workloads` logger) and returned as a note. So
  too the percentile of no values.
- Standard library only at import: the services and the simulator import `percentile`.
- `RssPeak` measures the peak resident set of this process between `reset()`
  and `read()` (Linux `clear_refs` + `VmHWM`); where the reset is refused it
  falls back to the lifetime peak (`ru_maxrss`) and says so in `note`.
"""
from __future__ import annotations

import importlib
import logging
import os
import platform
import resource
import statistics
import threading
from typing import Callable, Iterable

log = logging.getLogger("fairgpu.workloads")
_warned: set[str] = set()


def warn_once(message: str) -> str:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)
    return message


def percentile(values: Iterable[float], q: int) -> float | None:
    """The q-th percentile of `values` (q a whole number from 0 to 100), interpolated
    linearly between the closest ranks (`statistics.quantiles`' "inclusive" method,
    numpy's default); None when there are no values.

    fairgpu's one percentile: step times here, queue waits in reports
    (`services.report`), the simulator and the demo, and the benchmarks all call it."""
    if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= 100:
        raise ValueError(f"percentile must be a whole number from 0 to 100 (got {q!r})")
    xs = list(values)
    if len(xs) < 2 or q in (0, 100):
        return (min(xs) if q == 0 else max(xs)) if xs else None
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssPeak:
    """Peak RSS of this process over a window."""

    def __init__(self):
        self.note: str | None = None
        self._windowed = False

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self._windowed = _status_kib("VmHWM") is not None
        except OSError:
            self._windowed = False
        if not self._windowed:
            self.note = warn_once("peak RSS window not supported here; rss_peak_bytes is the process lifetime peak")

    def read(self) -> int:
        if self._windowed:
            kib = _status_kib("VmHWM")
            if kib is not None:
                return kib * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _visible_nvml_handles(pynvml):
    """NVML handles of the GPUs this process may use (honours CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() == "":
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    handles = []
    for item in visible.split(","):
        item = item.strip()
        if item.isdigit():
            handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(item)))
        elif item:
            handles.append(pynvml.nvmlDeviceGetHandleByUUID(item))
    return handles


def nvml_total_memory() -> int | None:
    """Total memory of the first visible GPU, from NVML; None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handles = _visible_nvml_handles(pynvml)
            return int(pynvml.nvmlDeviceGetMemoryInfo(handles[0]).total) if handles else None
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # no library, no driver, no device
        warn_once(f"NVML unavailable ({type(e).__name__}: {e}); no NVML memory figures")
        return None


def nvml_visible_totals(nvml_module=None) -> list[int]:
    """Total memory (bytes) of each GPU this process may use (CUDA_VISIBLE_DEVICES), from
    `nvml_module` (default: FAIRGPU_NVML_MODULE, else pynvml); [] without NVML."""
    try:
        pynvml = nvml_module or importlib.import_module(os.environ.get("FAIRGPU_NVML_MODULE") or "pynvml")
        pynvml.nvmlInit()
    except Exception as e:  # no library, no driver
        warn_once(f"NVML unavailable ({type(e).__name__}: {e}); no GPU memory totals")
        return []
    try:
        return [int(pynvml.nvmlDeviceGetMemoryInfo(h).total) for h in _visible_nvml_handles(pynvml)]
    except Exception as e:  # a device lost or not readable
        warn_once(f"NVML could not read the GPUs' memory ({type(e).__name__}: {e})")
        return []
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


class NvmlProcessPeak:
    """Samples NVML's per-process GPU memory for this pid (or the pids `pids()` names: a
    script job's process tree) in a background thread, and the visible GPUs' utilisation.
    `nvml_module`: a module with pynvml's interface (default: FAIRGPU_NVML_MODULE, else pynvml).
    `on_sample(used)` is called after every reading (at start, every `interval_s` in the
    sampler thread, at stop) with the bytes the pids hold now on the visible GPUs, None
    where NVML lists none of them: a GPU memory watchdog reads the same NVML session."""

    def __init__(self, interval_s: float = 0.02, pids: Callable[[], set[int]] | None = None, nvml_module=None,
                 on_sample: Callable[[int | None], None] | None = None):
        self.interval_s = interval_s
        self.peak: int | None = None
        self.current: int | None = None  # the last reading (bytes now), None where nothing was listed
        self._on_sample = on_sample
        self.note: str | None = None
        self.utilization: list[int] = []  # % of the visible GPUs, one sample per tick (device-wide)
        self._pids = pids or (lambda: {os.getpid()})
        self._module = nvml_module
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pynvml = None
        self._handles = []

    def start(self) -> None:
        try:
            pynvml = self._module or importlib.import_module(os.environ.get("FAIRGPU_NVML_MODULE") or "pynvml")
            pynvml.nvmlInit()
            self._pynvml, self._handles = pynvml, _visible_nvml_handles(pynvml)
        except Exception as e:
            self.note = warn_once(f"NVML unavailable ({type(e).__name__}: {e}); nvml_peak_memory_bytes is None")
            return
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        pids, used, util = self._pids(), None, []
        for h in self._handles:
            try:
                procs = self._pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                util.append(int(self._pynvml.nvmlDeviceGetUtilizationRates(h).gpu))
            except Exception:
                continue
            for p in procs:
                mem = getattr(p, "usedGpuMemory", None)
                if p.pid in pids and mem is not None:
                    used = (used or 0) + int(mem)
        if used is not None:
            self.peak = used if self.peak is None else max(self.peak, used)
        if util:
            self.utilization.append(max(util))
        self.current = used
        if self._on_sample is not None:
            self._on_sample(used)

    def sample(self) -> int | None:
        """Take one reading now (what the sampler thread does every `interval_s`); the bytes
        the pids hold, or None. Only after `start()` found NVML."""
        if self._pynvml is not None:
            self._sample()
        return self.current

    def utilization_summary(self) -> dict:
        """Mean and peak utilisation (%) of the visible GPUs while sampled (None without samples)."""
        u = self.utilization
        return {"gpu_utilization_mean": sum(u) / len(u) if u else None, "gpu_utilization_peak": max(u) if u else None}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> int | None:
        if self._pynvml is None:
            return None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        try:
            self._pynvml.nvmlShutdown()
        except Exception:
            pass
        if self.peak is None:
            self.note = warn_once("NVML does not list this process (PID namespace?); nvml_peak_memory_bytes is None")
        return self.peak
