"""fairgpu's GPU memory cap inside a user's script, and the record of what it did.

fairgpu runs a script with this folder first on PYTHONPATH, so Python imports
`sitecustomize` (next to this file) at start-up; that calls `install_from_env()`.
With FAIRGPU_MEMORY_FRACTION = f (0 < f <= 1) set, a finder on `sys.meta_path`
runs a hook right after the top-level `torch` or `tensorflow` package is imported
(once per framework and process):

- PyTorch: `torch.cuda.set_per_process_memory_fraction(f, d)` for every visible
  CUDA device d. It is queued with `torch.cuda._lazy_call`, so it runs when CUDA
  initialises, before the first allocation, and importing torch neither
  initialises CUDA nor poisons `fork` (until then the entry's state is "pending").
- TensorFlow: `tf.config.set_logical_device_configuration(gpu,
  [LogicalDeviceConfiguration(memory_limit=MiB)])` for every visible GPU, with
  MiB = f x the GPU's total memory read from NVML (the module named by
  FAIRGPU_NVML_MODULE, else `pynvml`).
- Where the framework sees no GPU, nothing is set in it: the limit is computed
  from NVML's first visible GPU and recorded, state "recorded".

A script reads back (after `import fairgpu_cap`):
- `fraction`: the float from FAIRGPU_MEMORY_FRACTION, or None;
- `applied`: {"pytorch"|"tensorflow": {"fraction", "limit_bytes" (int | None),
  "devices" (list of str), "how" (one line), "state" ("applied" | "pending" |
  "recorded" | "failed"), "total_bytes", "limit_bytes_per_device"}};
- `runs`: {framework: times its hook ran} (1 at most);
- `notes`: warnings (also written to stderr when a GPU's cap could not be set);
- `chained_sitecustomize`: the path of the other sitecustomize that ran after ours.

Only the standard library is imported here; the NVML module only when a limit in
bytes is needed (TensorFlow, or a framework that sees no GPU). The cap is
cooperative: the script can lift it by calling the same framework APIs.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading

ENV_FRACTION = "FAIRGPU_MEMORY_FRACTION"
ENV_NVML = "FAIRGPU_NVML_MODULE"
FRAMEWORKS = {"torch": "pytorch", "tensorflow": "tensorflow"}  # top-level package -> name

fraction = None  # float | None
applied = {}  # framework -> record (see the module docstring)
runs = {}  # framework -> how many times its hook ran
notes = []  # human-readable warnings
chained_sitecustomize = None  # path of the sitecustomize we chained to, if any
installed = False  # whether the import hook is on sys.meta_path

_lock = threading.Lock()


def _warn(message: str) -> None:
    notes.append(message)
    try:
        sys.stderr.write(f"fairgpu-cap: {message}\n")
        sys.stderr.flush()
    except Exception:  # no stderr (pythonw, closed fd): the note stays in `notes`
        pass


def parse_fraction(text):
    """FAIRGPU_MEMORY_FRACTION's value as a float in (0, 1]; raises ValueError."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{ENV_FRACTION}={text!r} is not in (0, 1]")
    return value


def install_from_env(environ=None) -> bool:
    """Install the hook if FAIRGPU_MEMORY_FRACTION is set and valid; True if installed."""
    environ = os.environ if environ is None else environ
    text = environ.get(ENV_FRACTION, "").strip()
    if not text:
        return False
    try:
        value = parse_fraction(text)
    except ValueError as exc:
        _warn(f"no GPU memory cap installed: {exc}")
        return False
    return install(value)


def install(value: float) -> bool:
    """Put the post-import hook for torch and tensorflow on sys.meta_path (idempotent)."""
    global fraction, installed
    with _lock:
        if installed:
            return True
        fraction = float(value)
        sys.meta_path.insert(0, _PostImportFinder())
        installed = True
    for package in FRAMEWORKS:  # imported before us (by a .pth file): cap it now
        module = sys.modules.get(package)
        if module is not None:
            _on_imported(package, module)
    return True


# ------------------------------------------------------------------ import hook
class _PostImportFinder:
    """Finds nothing itself: wraps the loader another finder returns for torch/tensorflow."""

    def __init__(self):
        self._searching = set()

    def find_spec(self, fullname, path=None, target=None):
        if path is not None or fullname not in FRAMEWORKS or FRAMEWORKS[fullname] in runs:
            return None  # submodules, other packages, frameworks already capped
        if fullname in self._searching:
            return None  # another finder asked the import system again: stay out
        self._searching.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None  # the import goes on (or fails) exactly as without us
        spec.loader = _PostImportLoader(spec.loader, fullname)
        return spec

    def invalidate_caches(self):
        pass


class _PostImportLoader:
    """Delegates to the real loader, then runs the hook once the package imported fine."""

    def __init__(self, loader, package):
        self._loader = loader
        self._package = package

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The package keeps its own loader: nothing of ours stays on it.
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        self._loader.exec_module(module)  # an import error propagates untouched
        _on_imported(self._package, module)

    def __getattr__(self, name):  # get_resource_reader, is_package, get_source, ...
        return getattr(self._loader, name)


def _on_imported(package, module) -> None:
    framework = FRAMEWORKS[package]
    with _lock:
        if framework in runs:
            return
        runs[framework] = 1
    record = {"fraction": fraction, "limit_bytes": None, "devices": [], "how": "",
              "state": "failed", "total_bytes": None, "limit_bytes_per_device": []}
    applied[framework] = record
    try:
        (_cap_torch if framework == "pytorch" else _cap_tensorflow)(module, fraction, record)
    except Exception as exc:  # never break the user's import
        record.update(state="failed", how=f"cap not applied: {type(exc).__name__}: {exc}")
        _warn(f"{framework}: GPU memory cap not applied: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ NVML
class NvmlUnavailable(Exception):
    pass


def _visible_items(count):
    """CUDA_VISIBLE_DEVICES as NVML indices (int) or UUIDs (str); unset or blank: all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return list(range(count))
    items = []
    for item in visible.split(","):
        item = item.strip()
        if not item:
            continue
        if item.lstrip("-").isdigit():
            if not 0 <= int(item) < count:
                break  # CUDA ignores the rest of the list after an invalid index
            items.append(int(item))
        else:
            items.append(item)
    return items


def nvml_totals():
    """Total memory of the GPUs visible to this process, from NVML.

    Returns (totals, exact, source): `totals` in the order CUDA numbers the visible
    devices; `exact` is False where that order cannot be told from NVML's
    (CUDA_VISIBLE_DEVICES by index, CUDA_DEVICE_ORDER not PCI_BUS_ID, GPUs of
    different sizes); `source` names the module and first GPU. Raises
    NvmlUnavailable with the reason.
    """
    name = os.environ.get(ENV_NVML) or "pynvml"
    try:
        nvml = importlib.import_module(name)
    except Exception as exc:
        raise NvmlUnavailable(f"cannot import NVML module {name!r}: {type(exc).__name__}: {exc}") from None
    try:
        nvml.nvmlInit()
    except Exception as exc:
        raise NvmlUnavailable(f"{name}.nvmlInit() failed: {type(exc).__name__}: {exc}") from None
    try:
        count = int(nvml.nvmlDeviceGetCount())
        every = [int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i)).total)
                 for i in range(count)]
        totals, first_name, exact = [], None, True
        for item in _visible_items(count):
            if isinstance(item, int):
                handle = nvml.nvmlDeviceGetHandleByIndex(item)
                ordered = os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") == "PCI_BUS_ID"
                exact = exact and (ordered or len(set(every)) <= 1)
            else:
                handle = nvml.nvmlDeviceGetHandleByUUID(item)
            totals.append(int(nvml.nvmlDeviceGetMemoryInfo(handle).total))
            if first_name is None:
                raw = nvml.nvmlDeviceGetName(handle)
                first_name = f"GPU {item} ({raw.decode() if isinstance(raw, bytes) else raw})"
    except Exception as exc:
        raise NvmlUnavailable(f"NVML read failed: {type(exc).__name__}: {exc}") from None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    if not totals:
        raise NvmlUnavailable(f"NVML ({name}) lists no visible GPU")
    if not exact:  # cannot tell which NVML GPU is which CUDA device: the smallest, for all
        totals = [min(every)] * len(totals)
    return totals, exact, f"NVML ({name}) {first_name}"


def _gib(n):
    return f"{n / 2**30:.2f} GiB"


def _record_only(record, framework_name, why, value, limit_of):
    """The framework sees no GPU: compute the limit it would get and record it."""
    try:
        totals, _, source = nvml_totals()
    except NvmlUnavailable as exc:
        record.update(state="recorded", how=(
            f"{why}, so nothing was set in {framework_name}; NVML unavailable ({exc}), "
            "so no limit in bytes was computed"))
        return
    limit = limit_of(value, totals[0])
    record.update(state="recorded", total_bytes=totals[0], limit_bytes=limit, how=(
        f"{why}, so nothing was set in {framework_name}: the cap is recorded, not applied "
        f"({value} x {_gib(totals[0])} of {source} = {limit} bytes)"))


# ------------------------------------------------------------------ PyTorch
def _torch_limit(value, total):
    return int(value * total)


def _cap_torch(torch, value, record):
    cuda = torch.cuda
    count = cuda.device_count()  # NVML-based before CUDA initialises: fork stays safe
    if count <= 0:
        _record_only(record, "PyTorch", "no CUDA device is visible to PyTorch", value, _torch_limit)
        return
    record["devices"] = [f"cuda:{i}" for i in range(count)]

    def apply():
        try:
            n = cuda.device_count()
            limits = []
            for i in range(n):
                cuda.set_per_process_memory_fraction(value, i)
                limits.append(_torch_limit(value, cuda.get_device_properties(i).total_memory))
            record.update(state="applied", devices=[f"cuda:{i}" for i in range(n)],
                          limit_bytes=limits[0] if limits else None, limit_bytes_per_device=limits,
                          total_bytes=cuda.get_device_properties(0).total_memory if n else None,
                          how=(f"torch.cuda.set_per_process_memory_fraction({value}, d) called for "
                               f"cuda:0..{n - 1} when CUDA initialised, before any allocation"))
        except Exception as exc:  # a failure here must not break the user's CUDA init
            record.update(state="failed", how=f"cap not applied: {type(exc).__name__}: {exc}")
            _warn(f"pytorch: GPU memory cap not applied: {type(exc).__name__}: {exc}")

    lazy_call = getattr(cuda, "_lazy_call", None)
    if lazy_call is not None and not cuda.is_initialized():
        record.update(state="pending", how=(
            f"torch.cuda.set_per_process_memory_fraction({value}, d) for each of {count} CUDA "
            "device(s) is queued to run when CUDA initialises (first CUDA use), before any allocation"))
        lazy_call(apply)
    else:
        apply()


# ------------------------------------------------------------------ TensorFlow
def _tf_limit_mib(value, total):
    return max(1, int(value * total / 2**20))


def _cap_tensorflow(tf, value, record):
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        _record_only(record, "TensorFlow", "no GPU is visible to TensorFlow", value,
                     lambda v, total: _tf_limit_mib(v, total) * 2**20)
        return
    record["devices"] = [gpu.name for gpu in gpus]
    try:
        totals, exact, source = nvml_totals()
    except NvmlUnavailable as exc:
        record.update(state="failed", how=(
            f"cap not applied: TensorFlow needs each GPU's total memory; NVML unavailable ({exc})"))
        _warn(f"tensorflow: GPU memory cap not applied: NVML unavailable ({exc})")
        return
    if len(totals) != len(gpus):  # TF skipped a GPU (e.g. too old): cannot pair them up
        totals, exact = [min(totals)] * len(gpus), False
    limits = []
    for gpu, total in zip(gpus, totals):
        mib = _tf_limit_mib(value, total)
        try:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=mib)])
        except RuntimeError as exc:  # TensorFlow had already initialised its GPUs
            record.update(state="failed", limit_bytes_per_device=limits, how=(
                f"cap not applied to {gpu.name}: {exc}"))
            _warn(f"tensorflow: GPU memory cap not applied to {gpu.name}: {exc}")
            return
        limits.append(mib * 2**20)
    record.update(state="applied", limit_bytes=limits[0], limit_bytes_per_device=limits,
                  total_bytes=totals[0], how=(
                      f"tf.config.set_logical_device_configuration(gpu, [LogicalDeviceConfiguration("
                      f"memory_limit={limits[0] // 2**20})]) set on {len(gpus)} GPU(s) before TensorFlow "
                      f"initialised them ({value} x {_gib(totals[0])} from {source}"
                      f"{'' if exact else '; CUDA and NVML order differ, the smallest GPU used for all'})"))
