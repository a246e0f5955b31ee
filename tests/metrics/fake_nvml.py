"""A stand-in for pynvml on machines with no GPU: the same function and exception names.

Tests only. State comes from `configure(...)` in this process, or from the JSON file
named by FAKE_NVML_STATE (so Ray worker processes see the same devices):
{"init_error": null | "LibraryNotFound" | "DriverNotLoaded" | ..., "devices": [
  {"name", "uuid", "util", "used", "total", "power_mw" (null = NotSupported),
   "mig": null | 0 | 1, "procs": [[pid, bytes | null], ...]}]}
A pid may be given as "cmdline:TEXT": every running process whose command line holds
TEXT is listed with those bytes, by the pid this process sees (a real driver's view of
a process it did not start, however it was launched). The sandbox's own `bwrap`
processes are never listed: their command line holds the script's, but like any process
without a CUDA context they hold no GPU memory.
Every call is counted in CALLS so tests can check init/shutdown pairing.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from types import SimpleNamespace

CALLS: Counter = Counter()
_state: dict | None = None


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_DriverNotLoaded(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_GpuIsLost(NVMLError):
    pass


def configure(devices=None, init_error: str | None = None) -> None:
    """Set this process's state. With no arguments, go back to FAKE_NVML_STATE (or no
    driver), so a test that configured the stand-in leaves later tests the file's state."""
    global _state
    if devices is None and init_error is None:
        _state = None
    else:
        _state = {"devices": [dict(d) for d in devices or ()], "init_error": init_error}
    CALLS.clear()


def t4(i: int, util=50, used=4 << 30, power_mw=35000, procs=()) -> dict:
    return {"name": "Tesla T4", "uuid": f"GPU-fake-{i:04d}", "util": util, "used": used,
            "total": 15 * (1 << 30), "power_mw": power_mw, "mig": None, "procs": [list(p) for p in procs]}


def _get() -> dict:
    if _state is not None:
        return _state
    path = os.environ.get("FAKE_NVML_STATE")
    if path:
        with open(path) as f:
            return json.load(f)
    return {"devices": [], "init_error": "LibraryNotFound"}


def _dev(handle) -> dict:
    d = _get()["devices"][handle]
    if d.get("lost"):
        raise NVMLError_GpuIsLost("GPU is lost")
    return d


def nvmlInit():
    CALLS["init"] += 1
    err = _get().get("init_error")
    if err:
        raise globals()[f"NVMLError_{err}"](err)


def nvmlShutdown():
    CALLS["shutdown"] += 1


def nvmlSystemGetDriverVersion():
    return "550.00-fake"


def nvmlDeviceGetCount():
    return len(_get()["devices"])


def nvmlDeviceGetHandleByIndex(i):
    if not 0 <= i < nvmlDeviceGetCount():
        raise NVMLError("invalid argument")
    return i


def nvmlDeviceGetName(h):
    return _dev(h)["name"]


def nvmlDeviceGetUUID(h):
    return _dev(h)["uuid"]


def nvmlDeviceGetHandleByUUID(uuid):
    for i, d in enumerate(_get()["devices"]):
        if d["uuid"] == (uuid.decode() if isinstance(uuid, bytes) else uuid):
            return i
    raise NVMLError("not found")


def nvmlDeviceGetMinorNumber(h):
    """/dev/nvidiaN's N: a device's "minor" if given, else its index."""
    return _dev(h).get("minor", h)


def nvmlDeviceGetUtilizationRates(h):
    d = _dev(h)
    if d.get("mig"):
        raise NVMLError_NotSupported("utilisation of a MIG-enabled GPU")
    return SimpleNamespace(gpu=d["util"], memory=0)


def nvmlDeviceGetMemoryInfo(h):
    d = _dev(h)
    return SimpleNamespace(total=d["total"], used=d["used"], free=d["total"] - d["used"])


def nvmlDeviceGetPowerUsage(h):
    mw = _dev(h)["power_mw"]
    if mw is None:
        raise NVMLError_NotSupported("power")
    return mw


def nvmlDeviceGetMigMode(h):
    mig = _dev(h).get("mig")
    if mig is None:
        raise NVMLError_NotSupported("MIG")
    return (mig, mig)


def nvmlDeviceGetComputeRunningProcesses(h):
    out = []
    for pid, used in _dev(h)["procs"]:
        pids = _matching(pid[len("cmdline:"):]) if isinstance(pid, str) and pid.startswith("cmdline:") else [pid]
        out += [SimpleNamespace(pid=p, usedGpuMemory=used) for p in pids]
    return out


def _matching(text: str) -> list[int]:
    """Pids of the running processes whose command line holds `text` (zombies have none)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    line = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{entry.name}/comm", "rb") as f:
                    if f.read().strip() == b"bwrap":
                        continue
            except OSError:
                continue
            if text in line:
                found.append(int(entry.name))
    return sorted(found)
