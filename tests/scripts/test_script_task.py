"""A script job's task, without Ray: the working directory travels as checked archive, the
command runs with fairgpu's environment and nothing else of the server's, exit codes map to
outcomes, output reaches the attempt's log, and a stop request ends it as stopped."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest

from scheduler.runtime import jobfiles, scripts
from scheduler.runtime.archive import ARCHIVE_MAX_BYTES, ArchiveError, check_archive, pack
from scheduler.runtime.tasks import TaskPayload, run_job


def _job(tmp_path, files: dict[str, str], command: list[str], job_id: int = 5, attempt: int = 1) -> TaskPayload:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, text in files.items():
        (src / name).write_text(text)
    root = tmp_path / "results"
    archive = jobfiles.workdir_archive(root, job_id)
    jobfiles.ensure_dir(archive.parent)
    archive.write_bytes(pack(src))
    return TaskPayload.for_job(job_id=job_id, attempt=attempt, model="script", framework=None, mode="train",
                               spec={"command": command}, num_gpus=0.25, results_dir=str(root),
                               submitted_at=0.0, slices=1)


ENV_PROBE = """
import json, os, pathlib
keys = sorted(k for k in os.environ if k.startswith("FAIRGPU_"))
print(json.dumps({k: os.environ[k] for k in keys}))
print("db:", os.environ.get("FAIRGPU_DB"), "secret:", os.environ.get("SECRET_TOKEN"))
print("cwd files:", sorted(p.name for p in pathlib.Path(".").iterdir()))
"""


def test_the_command_runs_in_its_directory_with_fairgpus_environment_only(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRGPU_DB", "postgresql+psycopg://fairgpu:hunter2@db/fairgpu")
    monkeypatch.setenv("SECRET_TOKEN", "fg_admin_secret")
    payload = _job(tmp_path, {"probe.py": ENV_PROBE, "data.txt": "x"}, [sys.executable, "probe.py"])
    result = run_job(payload)
    assert result.measurement["exit_code"] == 0
    log = jobfiles.log_path(payload.results_dir, 5, 1).read_text()
    env = json.loads(log.splitlines()[0])
    assert env == {"FAIRGPU_ATTEMPT": "1", "FAIRGPU_CHECKPOINT_DIR": "/fairgpu/checkpoint",  # as the sandbox shows it
                   "FAIRGPU_JOB_ID": "5", "FAIRGPU_MEMORY_FRACTION": "0.25", "FAIRGPU_SLICES": "1"}
    assert "db: None secret: None" in log  # the server's secrets are not in the script's environment
    assert "cwd files: ['data.txt', 'probe.py']" in log
    assert not (Path(payload.results_dir) / "5" / "work-1").exists()  # the copy goes with the attempt


@pytest.mark.parametrize("code, reason", [("raise SystemExit(3)", "exit code 3"),
                                          ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                                           "killed by SIGKILL")])
def test_a_failing_command_fails_the_attempt_with_its_status(tmp_path, code, reason):
    payload = _job(tmp_path, {"fail.py": f"print('about to fail', flush=True)\n{code}\n"}, [sys.executable, "fail.py"])
    with pytest.raises(scripts.ScriptFailed, match=reason):
        run_job(payload)
    assert "about to fail" in jobfiles.log_path(payload.results_dir, 5, 1).read_text()
    assert jobfiles.read_result(payload.results_dir, 5, 1) is None  # nothing published


def test_a_stop_request_sends_sigterm_and_ends_the_attempt_as_stopped(tmp_path):
    script = """
import os, signal, sys, time, pathlib
def stop(*_):
    pathlib.Path(os.environ["FAIRGPU_CHECKPOINT_DIR"], "step").write_text("41")
    print("saved at step 41", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("running", flush=True)
time.sleep(60)
"""
    payload = _job(tmp_path, {"train.py": script}, [sys.executable, "train.py"])
    root = payload.results_dir
    log = jobfiles.log_path(root, 5, 1)

    def server():
        for _ in range(1000):
            if log.exists() and "running" in log.read_text():
                jobfiles.request_checkpoint(root, 5)
                return
            threading.Event().wait(0.01)

    t = threading.Thread(target=server)
    t.start()
    with pytest.raises(scripts.ScriptStopped, match="exit code 0"):
        run_job(payload)
    t.join()
    assert not jobfiles.checkpoint_requested(root, 5)  # acknowledged
    from workloads import generations

    newest = generations.latest(jobfiles.checkpoint_dir(root, 5))  # its folder became a generation
    assert newest is not None and (newest / "step").read_text() == "41"
    assert "saved at step 41" in log.read_text()


def test_archives_that_cannot_travel_are_refused(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    (big / "weights.bin").write_bytes(os.urandom(ARCHIVE_MAX_BYTES + 1))
    with pytest.raises(ArchiveError, match="packs to over 20 MiB"):
        pack(big)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError, match="not a regular file"):
        pack(linked)
    with pytest.raises(ArchiveError, match="not a tar.gz"):
        check_archive(b"not an archive")
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ArchiveError, match="unsafe path"):
        check_archive(buf.getvalue())


def test_nvml_peak_memory_and_utilisation_are_measured_for_the_scripts_processes(tmp_path, monkeypatch):
    state = tmp_path / "nvml.json"
    device = {"name": "Tesla T4", "uuid": "GPU-fake-0000", "util": 37, "used": 0, "total": 15 << 30,
              "power_mw": None, "mig": None, "procs": []}
    # the script and its own subprocess, known to the stand-in by their command lines (the
    # driver reports host PIDs; the script, in its own PID namespace, could not name them)
    unique = f"{os.getpid()}-{id(state)}"
    mine, childs = f"script-{unique}", f"child-{unique}"  # neither command line holds the other's
    device["procs"] = [[f"cmdline:{mine}", 1 << 30], [f"cmdline:{childs}", 3 << 30]]
    state.write_text(json.dumps({"init_error": None, "devices": [device]}))
    monkeypatch.setenv("FAIRGPU_NVML_MODULE", "fake_nvml")  # the stand-in, as on a CPU-only machine
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))
    script = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)", "child-" + sys.argv[2]])
time.sleep(2)
child.kill()
"""
    result = run_job(_job(tmp_path, {"gpu.py": script}, [sys.executable, "gpu.py", mine, unique]))
    assert result.measurement["nvml_peak_memory_bytes"] == 4 << 30
    assert result.measurement["gpu_utilization_peak"] == 37
