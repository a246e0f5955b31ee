"""The GPU memory cap inside a user's script: scheduler/runtime/script_site (sitecustomize + fairgpu_cap).

Every check runs a real subprocess with PYTHONPATH = scheduler/runtime/script_site, as the
runner starts a script, and the NVML stand-in (tests/metrics/fake_nvml.py, state from
the JSON file named by FAKE_NVML_STATE). The real torch and tensorflow show the CPU
path (nothing visible to the framework: the cap is recorded from NVML, not applied);
small fake `torch` / `tensorflow` packages written to tmp_path show, on CPU, the
framework calls the hook makes where a GPU is visible. TensorFlow is imported once.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fake_nvml

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "scheduler" / "runtime" / "script_site"
METRICS = ROOT / "tests" / "metrics"
T4_TOTAL = 15 * (1 << 30)  # fake_nvml.t4's total memory
A100_TOTAL = 40 * (1 << 30)


def _state(tmp_path: Path, devices, init_error=None) -> Path:
    path = tmp_path / "nvml_state.json"
    path.write_text(json.dumps({"devices": list(devices), "init_error": init_error}))
    return path


def _env(tmp_path: Path, fraction: str | None = "0.25", extra_path=(), devices=None, **env) -> dict:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAIRGPU_", "FAKE_NVML", "CUDA_")) and k != "PYTHONPATH"}
    out["PYTHONPATH"] = os.pathsep.join([str(SITE), str(METRICS), *map(str, extra_path)])
    out["FAIRGPU_NVML_MODULE"] = "fake_nvml"
    out["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out["FAKE_NVML_STATE"] = str(_state(tmp_path, [fake_nvml.t4(0), fake_nvml.t4(1)] if devices is None else devices))
    if fraction is not None:
        out["FAIRGPU_MEMORY_FRACTION"] = fraction
    out.update(env)
    return out


def _run(tmp_path: Path, code: str, env: dict, timeout=120) -> subprocess.CompletedProcess:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"script failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


def _last_json(out: subprocess.CompletedProcess):
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ the real frameworks (CPU)
def test_pytorch_cap_is_recorded_from_nvml_when_no_cuda_device(tmp_path):
    out = _run(tmp_path, """
        import json, sys
        import torch
        import fairgpu_cap
        x = torch.ones(4) * 2  # torch works as usual
        print(json.dumps({"applied": fairgpu_cap.applied, "fraction": fairgpu_cap.fraction,
                          "sum": float(x.sum()), "nvml": "fake_nvml" in sys.modules}))
    """, _env(tmp_path))
    got = _last_json(out)
    rec = got["applied"]["pytorch"]
    assert got["fraction"] == 0.25 and rec["fraction"] == 0.25
    assert rec["limit_bytes"] == int(0.25 * T4_TOTAL) and rec["total_bytes"] == T4_TOTAL
    assert rec["devices"] == [] and rec["state"] == "recorded"
    assert "no CUDA device is visible" in rec["how"] and "not applied" in rec["how"]
    assert got["sum"] == 8.0 and got["nvml"]
    assert set(got["applied"]) == {"pytorch"}


def test_tensorflow_cap_is_recorded_from_nvml_when_no_gpu(tmp_path):
    out = _run(tmp_path, """
        import json
        import tensorflow as tf
        import fairgpu_cap
        y = tf.reduce_sum(tf.ones([4]) * 2)  # TensorFlow works as usual
        print(json.dumps({"applied": fairgpu_cap.applied, "runs": fairgpu_cap.runs, "sum": float(y)}))
    """, _env(tmp_path), timeout=240)
    got = _last_json(out)
    rec = got["applied"]["tensorflow"]
    assert rec["fraction"] == 0.25
    assert rec["limit_bytes"] == int(0.25 * T4_TOTAL / 2**20) * 2**20 == int(0.25 * T4_TOTAL)
    assert rec["devices"] == [] and rec["state"] == "recorded"
    assert "no GPU is visible to TensorFlow" in rec["how"] and "not applied" in rec["how"]
    assert got["runs"] == {"tensorflow": 1} and got["sum"] == 8.0


def test_without_a_fraction_nothing_is_installed_and_torch_imports(tmp_path):
    out = _run(tmp_path, """
        import json, sys
        import torch, torch.nn
        import fairgpu_cap
        finders = [type(f).__name__ for f in sys.meta_path]
        print(json.dumps({"installed": fairgpu_cap.installed, "applied": fairgpu_cap.applied,
                          "fraction": fairgpu_cap.fraction, "finders": finders,
                          "nvml": "fake_nvml" in sys.modules, "t": float(torch.ones(3).sum())}))
    """, _env(tmp_path, fraction=None))
    got = _last_json(out)
    assert "_PostImportFinder" not in got.pop("finders")
    assert got == {"installed": False, "applied": {}, "fraction": None, "nvml": False, "t": 3.0}


def test_submodule_imports_work_and_the_hook_runs_once(tmp_path):
    out = _run(tmp_path, """
        import json, sys, importlib
        import torch.nn
        from torch import nn
        import torch.nn.functional as F
        import torch
        importlib.reload(torch.nn)
        import fairgpu_cap
        layer = nn.Linear(2, 1)
        y = F.relu(layer(torch.ones(1, 2)))
        print(json.dumps({"runs": fairgpu_cap.runs, "keys": sorted(fairgpu_cap.applied),
                          "loader": type(torch.__spec__.loader).__name__,
                          "loader2": type(torch.__loader__).__name__,
                          "fairgpu_or_ray": sorted(m for m in sys.modules
                                                   if m.split(".")[0] in ("scheduler", "ray", "quota", "sqlalchemy"))}))
    """, _env(tmp_path))
    got = _last_json(out)
    assert got["runs"] == {"pytorch": 1} and got["keys"] == ["pytorch"]
    assert got["loader"] == got["loader2"] == "SourceFileLoader"  # nothing of ours stays on torch
    assert got["fairgpu_or_ray"] == []


# ------------------------------------------------------------------ sitecustomize chaining
def _other_site(tmp_path: Path, body: str) -> Path:
    other = tmp_path / "other_site"
    other.mkdir()
    (other / "sitecustomize.py").write_text(textwrap.dedent(body))
    return other


@pytest.mark.parametrize("fraction", ["0.25", None])
def test_a_sitecustomize_further_on_the_path_still_runs(tmp_path, fraction):
    marker = tmp_path / "other_ran.txt"
    other = _other_site(tmp_path, f"""
        import os
        os.environ["OTHER_SITECUSTOMIZE"] = "ran"
        with open({str(marker)!r}, "a") as f:
            f.write(__name__ + "\\n")
    """)
    out = _run(tmp_path, """
        import json, os, sys
        import fairgpu_cap, sitecustomize
        print(json.dumps({"env": os.environ.get("OTHER_SITECUSTOMIZE"), "installed": fairgpu_cap.installed,
                          "chained": fairgpu_cap.chained_sitecustomize, "ours": sitecustomize.__file__}))
    """, _env(tmp_path, fraction=fraction, extra_path=[other]))
    got = _last_json(out)
    assert got["env"] == "ran" and marker.read_text() == "sitecustomize\n"  # ran once
    assert got["installed"] is (fraction is not None)
    assert Path(got["chained"]) == other / "sitecustomize.py"
    assert Path(got["ours"]) == SITE / "sitecustomize.py"


def test_a_failing_sitecustomize_further_on_is_reported_and_startup_goes_on(tmp_path):
    other = _other_site(tmp_path, "raise RuntimeError('broken distribution hook')\n")
    out = _run(tmp_path, """
        import json, fairgpu_cap
        print(json.dumps({"installed": fairgpu_cap.installed}))
    """, _env(tmp_path, extra_path=[other]))
    assert _last_json(out) == {"installed": True}
    assert "Error in sitecustomize" in out.stderr and "broken distribution hook" in out.stderr


def test_an_invalid_fraction_installs_nothing_and_says_so(tmp_path):
    out = _run(tmp_path, """
        import json, fairgpu_cap
        print(json.dumps({"installed": fairgpu_cap.installed, "notes": fairgpu_cap.notes}))
    """, _env(tmp_path, fraction="1.5"))
    got = _last_json(out)
    assert got["installed"] is False and "not in (0, 1]" in got["notes"][0]
    assert "fairgpu-cap: no GPU memory cap installed" in out.stderr


# ------------------------------------------------------------------ the GPU path, with fake frameworks
FAKE_TORCH_CUDA = '''
import os
CALLS = []
_initialized = False
_queued = []
def device_count():
    CALLS.append(("device_count",))
    return int(os.environ.get("FAKE_GPUS", "0"))
def is_initialized():
    return _initialized
def _lazy_call(fn):
    if _initialized:
        fn()
    else:
        _queued.append(fn)
def init():  # what torch.cuda._lazy_init does: run the queued calls, then mark initialised
    global _initialized
    if not _initialized:
        for fn in _queued:
            fn()
        _initialized = True
def set_per_process_memory_fraction(fraction, device):
    assert isinstance(fraction, float)
    CALLS.append(("set_per_process_memory_fraction", fraction, device))
class _Props:
    total_memory = 80 * 2**30
def get_device_properties(i):
    return _Props()
'''

FAKE_TF = '''
import os
from types import SimpleNamespace
CALLS = []
INITIALISED = os.environ.get("FAKE_TF_INITIALISED") == "1"
class LogicalDeviceConfiguration:
    def __init__(self, memory_limit=None):
        self.memory_limit = memory_limit
def list_physical_devices(kind):
    return [SimpleNamespace(name=f"/physical_device:GPU:{i}", device_type="GPU")
            for i in range(int(os.environ.get("FAKE_GPUS", "0")))]
def set_logical_device_configuration(gpu, configs):
    if INITIALISED:
        raise RuntimeError("Virtual devices cannot be modified after being initialized")
    CALLS.append((gpu.name, [c.memory_limit for c in configs]))
config = SimpleNamespace(list_physical_devices=list_physical_devices, LogicalDeviceConfiguration=LogicalDeviceConfiguration,
                         set_logical_device_configuration=set_logical_device_configuration)
'''


@pytest.fixture
def fakes(tmp_path) -> Path:
    root = tmp_path / "fake_frameworks"
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "__init__.py").write_text("from . import cuda\n")
    (root / "torch" / "cuda.py").write_text(FAKE_TORCH_CUDA)
    (root / "tensorflow").mkdir()
    (root / "tensorflow" / "__init__.py").write_text(FAKE_TF)
    return root


def test_pytorch_on_a_gpu_queues_the_fraction_until_cuda_initialises(tmp_path, fakes):
    out = _run(tmp_path, """
        import json, copy, sys
        from torch import cuda
        import torch.cuda, torch
        import fairgpu_cap
        before = copy.deepcopy(fairgpu_cap.applied["pytorch"])
        calls_before = list(torch.cuda.CALLS)
        torch.cuda.init()
        print(json.dumps({"before": before, "calls_before": calls_before, "after": fairgpu_cap.applied["pytorch"],
                          "calls": torch.cuda.CALLS, "nvml": "fake_nvml" in sys.modules}))
    """, _env(tmp_path, extra_path=[fakes], FAKE_GPUS="2"))
    got = _last_json(out)
    assert got["before"]["state"] == "pending" and got["before"]["devices"] == ["cuda:0", "cuda:1"]
    assert "queued" in got["before"]["how"]
    assert got["calls_before"] == [["device_count"]]  # the hook ran once, nothing set before CUDA init
    after = got["after"]
    assert after["state"] == "applied" and after["limit_bytes"] == int(0.25 * 80 * 2**30)
    assert "set_per_process_memory_fraction(0.25" in after["how"]
    sets = [c for c in got["calls"] if c[0] == "set_per_process_memory_fraction"]
    assert sets == [["set_per_process_memory_fraction", 0.25, 0], ["set_per_process_memory_fraction", 0.25, 1]]
    assert got["nvml"] is False  # PyTorch on a GPU needs no NVML


def test_pytorch_without_nvml_records_no_limit_and_says_why(tmp_path, fakes):
    out = _run(tmp_path, """
        import json, torch, fairgpu_cap
        print(json.dumps(fairgpu_cap.applied["pytorch"]))
    """, _env(tmp_path, extra_path=[fakes], FAKE_GPUS="0", FAIRGPU_NVML_MODULE="no_such_nvml_module"))
    rec = _last_json(out)
    assert rec["limit_bytes"] is None and rec["state"] == "recorded"
    assert "NVML unavailable" in rec["how"] and "no_such_nvml_module" in rec["how"]


def test_tensorflow_on_a_gpu_sets_a_logical_device_with_the_limit(tmp_path, fakes):
    out = _run(tmp_path, """
        import json, tensorflow as tf, fairgpu_cap
        print(json.dumps({"rec": fairgpu_cap.applied["tensorflow"], "calls": tf.CALLS}))
    """, _env(tmp_path, extra_path=[fakes], FAKE_GPUS="2"))
    got = _last_json(out)
    mib = int(0.25 * T4_TOTAL / 2**20)
    assert got["calls"] == [["/physical_device:GPU:0", [mib]], ["/physical_device:GPU:1", [mib]]]
    rec = got["rec"]
    assert rec["state"] == "applied" and rec["limit_bytes"] == mib * 2**20
    assert rec["devices"] == ["/physical_device:GPU:0", "/physical_device:GPU:1"]
    assert "set_logical_device_configuration" in rec["how"]


def test_tensorflow_already_initialised_or_without_nvml_is_reported_not_hidden(tmp_path, fakes):
    out = _run(tmp_path, """
        import json, tensorflow as tf, fairgpu_cap
        print(json.dumps(fairgpu_cap.applied["tensorflow"]))
    """, _env(tmp_path, extra_path=[fakes], FAKE_GPUS="1", FAKE_TF_INITIALISED="1"))
    rec = _last_json(out)
    assert rec["state"] == "failed" and "cannot be modified" in rec["how"]
    assert "fairgpu-cap: tensorflow: GPU memory cap not applied" in out.stderr

    out = _run(tmp_path, """
        import json, tensorflow as tf, fairgpu_cap
        print(json.dumps({"rec": fairgpu_cap.applied["tensorflow"], "calls": tf.CALLS}))
    """, _env(tmp_path, extra_path=[fakes], FAKE_GPUS="1", devices=[], FAKE_NVML_STATE="/nonexistent.json"))
    got = _last_json(out)
    assert got["calls"] == [] and got["rec"]["state"] == "failed" and "NVML unavailable" in got["rec"]["how"]


# ------------------------------------------------------------------ NVML totals per visible GPU
def _cap_module():
    spec = importlib.util.spec_from_file_location("fairgpu_cap_under_test", SITE / "fairgpu_cap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nvml_totals_follow_cuda_visible_devices_and_stay_conservative(monkeypatch):
    cap = _cap_module()
    monkeypatch.setenv("FAIRGPU_NVML_MODULE", "fake_nvml")
    big = dict(fake_nvml.t4(1), name="A100", total=A100_TOTAL)
    fake_nvml.configure([fake_nvml.t4(0), big])
    try:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
        monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        assert cap.nvml_totals()[:2] == ([A100_TOTAL], True)
        monkeypatch.delenv("CUDA_DEVICE_ORDER")  # fastest first: CUDA's 1 may be NVML's 0
        assert cap.nvml_totals()[:2] == ([T4_TOTAL], False)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        totals, exact, source = cap.nvml_totals()
        assert totals == [T4_TOTAL, T4_TOTAL] and not exact and "GPU 0 (Tesla T4)" in source
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # an invalid index hides the rest
        with pytest.raises(cap.NvmlUnavailable, match="no visible GPU"):
            cap.nvml_totals()
        fake_nvml.configure([], init_error="DriverNotLoaded")
        with pytest.raises(cap.NvmlUnavailable, match="DriverNotLoaded"):
            cap.nvml_totals()
        assert fake_nvml.CALLS["init"] == 1
    finally:
        fake_nvml.configure([])
        fake_nvml._state = None
