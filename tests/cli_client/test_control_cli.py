"""Slurm's verbs at the terminal against a live server: cancel many, hold/release, requeue,
update, capacity, jobs --state/--since and submit --after."""
from __future__ import annotations

import json

from click.testing import CliRunner

from scheduler.cli import main

runner = CliRunner()


def run(env, *argv):
    return runner.invoke(main, list(argv), env=env)


def submit(env, *extra) -> list[int]:
    r = run(env, "submit", "hold", "--seconds", "30", "--slices", "1", *extra)
    assert r.exit_code == 0, r.output
    return [int(x) for x in r.stdout.split()]


def test_hold_release_update_cancel_and_after(env_for):
    env = env_for("a_vision")
    (x,), (y,) = submit(env), submit(env)
    r = run(env, "hold", str(x), str(y))
    assert (r.exit_code, r.stdout) == (0, f"job {x} held\njob {y} held\n")
    shown = json.loads(run(env, "job", "show", str(x), "--json").stdout)
    assert shown["reason"] == "JobHeldUser"
    assert run(env, "release", str(x)).stdout == f"job {x} released\n"
    r = run(env, "release", str(x))
    assert (r.exit_code, r.stderr.strip()) == (1, f"Error: job {x} is not held")
    r = run(env, "update", str(x), "--time", "10m", "--slices", "2", "--json")
    assert r.exit_code == 0, r.output
    assert (json.loads(r.stdout)["slices"], json.loads(r.stdout)["time_limit_s"]) == (2, 600)
    assert run(env, "update", str(x), "--slices", "0").exit_code == 1
    (z,) = submit(env, "--after", str(x))
    assert json.loads(run(env, "job", "show", str(z), "--json").stdout)["reason"] == "Dependency"
    r = run(env, "cancel", str(x), str(y))
    assert (r.exit_code, r.stdout) == (0, f"job {x} CANCELLED\njob {y} CANCELLED\n")
    assert json.loads(run(env, "job", "show", str(z), "--json").stdout)["reason"] == "DependencyNeverSatisfied"
    listed = json.loads(run(env, "jobs", "--state", "CANCELLED", "--json").stdout)
    assert [j["id"] for j in listed] == [x, y]
    assert run(env, "requeue", str(x)).stdout == f"job {x} requeued\n"
    assert json.loads(run(env, "job", "show", str(z), "--json").stdout)["reason"] == "Dependency"
    r = run(env, "cancel", "--state", "PENDING")
    assert r.exit_code == 0 and f"job {z} CANCELLED" in r.stdout and f"job {x} CANCELLED" in r.stdout
    assert run(env, "jobs", "--since", "soon").exit_code == 1


def test_cancel_a_whole_array_and_capacity(env_for):
    env = env_for("b")
    ids = submit(env, "--count", "3")
    r = run(env, "cancel", "--array", str(ids[0]))
    assert r.stdout.split("\n")[:3] == [f"job {i} CANCELLED" for i in ids]
    assert run(env, "cancel").exit_code == 2
    rows = json.loads(run(env, "capacity", "--json").stdout)
    assert [(n["node"], n["slices_total"], n["state"]) for n in rows] == [("gpu-box-1", 8, "idle")]
    assert "gpu-box-1" in run(env, "capacity").stdout
