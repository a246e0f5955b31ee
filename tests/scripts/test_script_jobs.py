"""Script jobs end to end on CPU slices: a real embedded server (local Ray with logical
GPUs, SQLite, the HTTP API and the CLI). Exit codes map to states, output reaches
`fairgpu logs`, the slice's memory cap is applied as the script reads it back on the
NVML stand-in (in each installed framework), a preempted script resumes from its
checkpoint, a disallowed account is refused, and one institution cannot reach
another's working directory or logs."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.runtime import archive
from scheduler.cli import main
from service_helpers import account, jobs, start_server, wait_for, wait_states

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
FAKE_NVML = Path(__file__).parents[1] / "metrics" / "fake_nvml.py"
CAP_PROBE = """
import json, os, sys
os.environ["FAIRGPU_NVML_MODULE"] = "fake_nvml"  # no GPU here: the stand-in tells the GPU's size
os.environ["FAKE_NVML_STATE"] = "nvml_state.json"
import {module}
import fairgpu_cap
print("CAP " + json.dumps(fairgpu_cap.applied["{framework}"]))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("scripts"), gpus=1, checkpoint_grace_s=20.0)  # 4 slices
    yield s
    s.stop()


def _env(client):
    return {"FAIRGPU_URL": str(client.base_url), "FAIRGPU_TOKEN": client.headers["Authorization"].split()[1]}


def _submit(client, workdir, *command, slices=1, framework=None, expect=0):
    args = ["submit", "script", "--slices", str(slices), "--working-dir", str(workdir), "--json"]
    if framework:
        args += ["--framework", framework]
    r = CliRunner().invoke(main, [*args, "--", *command], env=_env(client))
    assert r.exit_code == expect, r.output
    return json.loads(r.stdout)["id"] if expect == 0 else r


def _logs(client, job_id):
    r = CliRunner().invoke(main, ["logs", str(job_id)], env=_env(client))
    assert r.exit_code == 0, r.output
    return r.output


def _dir(tmp_path, **files) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_exit_codes_map_to_states_and_output_reaches_the_logs(server, tmp_path):
    lab = account(server, "lab-a", allow_scripts=True)
    work = _dir(tmp_path, **{"ok.py": "print('hello from my code', flush=True)\n",
                            "bad.py": "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n"})
    ok = _submit(lab, work, sys.executable, "ok.py")
    bad = _submit(lab, work, sys.executable, "bad.py")
    done = wait_states(lab, [ok, bad])
    assert done[ok]["state"] == "SUCCEEDED" and done[ok]["result"]["exit_code"] == 0
    assert done[bad]["state"] == "FAILED" and "exit code 3" in done[bad]["error"]
    assert "hello from my code" in _logs(lab, ok)
    assert "about to fail" in _logs(lab, bad)


@pytest.mark.parametrize("framework, module", [("pytorch", "torch"), ("tensorflow", "tensorflow")])
def test_the_slices_memory_cap_is_applied_as_the_script_reads_it_back(server, tmp_path, framework, module):
    lab = account(server, f"cap-{framework}", allow_scripts=True)
    state = {"init_error": None, "devices": [{"name": "Tesla T4", "uuid": "GPU-fake-0000", "util": 0, "used": 0,
                                              "total": 15 << 30, "power_mw": None, "mig": None, "procs": []}]}
    work = _dir(tmp_path, **{"probe.py": CAP_PROBE.format(module=module, framework=framework),
                            "nvml_state.json": json.dumps(state)})
    shutil.copy(FAKE_NVML, work / "fake_nvml.py")
    job_id = _submit(lab, work, sys.executable, "probe.py", framework=framework)
    assert wait_states(lab, [job_id], timeout=240)[job_id]["state"] == "SUCCEEDED", _logs(lab, job_id)
    line = next(x for x in _logs(lab, job_id).splitlines() if x.startswith("CAP "))
    cap = json.loads(line[4:])
    assert cap["fraction"] == 0.25  # 1 slice of a GPU split 4 ways
    assert cap["limit_bytes"] == (15 << 30) // 4


def test_a_preempted_script_resumes_from_its_checkpoint(server, tmp_path):
    lab = account(server, "lab-b", allow_scripts=True)
    other = account(server, "needs-it", guaranteed=2)
    work = tmp_path / "examples"
    shutil.copytree(EXAMPLES, work)
    job_id = _submit(lab, work, "env", "TRAIN_STEPS=300", "TRAIN_STEP_DELAY=0.02", sys.executable,
                     "train_resume.py", slices=4)
    wait_for(lambda: "step 40 " in _logs(lab, job_id), timeout=120, what="the script to train a while",
             show=lambda: _logs(lab, job_id)[-500:])
    r = other.post("/v1/jobs", json={"model": "hold", "slices": 2, "seconds": 2})
    assert r.status_code == 201, r.text
    wait_for(lambda: jobs(lab)[job_id]["preemptions"] >= 1, timeout=60, what="the script to be preempted")
    done = wait_states(lab, [job_id], timeout=240)[job_id]
    assert done["state"] == "SUCCEEDED" and done["attempts"] >= 2
    out = _logs(lab, job_id)
    assert "stopped at step" in out and "resumed at step" in out
    stopped = int(out.split("stopped at step ")[1].split(":")[0])
    resumed = int(out.split("resumed at step ")[1].split()[0])
    assert resumed == stopped > 0  # it went on from its checkpoint, not from step 0
    assert "done: 300 steps" in out


def test_an_account_without_scripts_is_refused_and_writes_nothing(server, tmp_path):
    lab = account(server, "no-scripts")
    work = _dir(tmp_path, **{"x.py": "print(1)\n"})
    before = jobs(lab)
    r = _submit(lab, work, sys.executable, "x.py", expect=1)
    assert "may not run scripts" in r.output and "--allow-scripts" in r.output
    assert jobs(lab) == before


def test_one_institution_cannot_reach_anothers_working_directory_or_logs(server, tmp_path):
    a = account(server, "inst-a", allow_scripts=True)
    b = account(server, "inst-b", allow_scripts=True)
    work = _dir(tmp_path, **{"secret.py": "print('a secret result', flush=True)\n"})
    job_id = _submit(a, work, sys.executable, "secret.py")
    wait_states(a, [job_id])
    assert b.get(f"/v1/jobs/{job_id}/logs").status_code == 404
    assert b.get(f"/v1/jobs/{job_id}").status_code == 404
    sent = a.post("/v1/uploads", content=archive.pack(work),
                  headers={"Content-Type": "application/octet-stream"}).json()
    r = b.post("/v1/jobs", json={"model": "script", "slices": 1, "command": ["python", "secret.py"],
                                 "upload": sent["upload"]})
    assert r.status_code == 404 and "unknown upload" in r.json()["detail"]
