"""The institutions' CLI end to end against a real uvicorn server, through click's CliRunner."""
from __future__ import annotations

import json
import os
import stat

from click.testing import CliRunner

from scheduler.cli import main
from scheduler.cli.jobs import JOB_KEYS

runner = CliRunner()


def run(env, *argv):
    return runner.invoke(main, list(argv), env=env)


def test_submit_jobs_show_cancel_logs(env_for):
    env = env_for("a_vision")
    r = run(env, "submit", "hold", "--seconds", "30", "--slices", "2")
    assert r.exit_code == 0, r.output
    hold_id = int(r.stdout.strip())
    r = run(env, "submit", "resnet18", "--framework", "pytorch", "--slices", "1", "--steps", "5", "--json")
    assert r.exit_code == 0, r.output
    model_id = json.loads(r.stdout)["id"]

    listed = json.loads(run(env, "jobs", "--json").stdout)
    assert [j["id"] for j in listed] == [hold_id, model_id]
    assert all(tuple(j) == JOB_KEYS for j in listed)
    assert {j["state"] for j in listed} == {"PENDING"} and listed[0]["account"] == "uni-a/vision"
    table = run(env, "jobs").stdout
    assert "uni-a/vision" in table and "resnet18" in table and "PENDING" in table

    shown = run(env, "job", "show", str(model_id))
    assert shown.exit_code == 0 and "state:" in shown.stdout and "resnet18" in shown.stdout
    assert json.loads(run(env, "job", "show", str(model_id), "--json").stdout)["framework"] == "pytorch"

    r = run(env, "cancel", str(hold_id))
    assert (r.exit_code, r.stdout.strip()) == (0, f"job {hold_id} CANCELLED")
    logs = run(env, "logs", str(hold_id)).stdout.splitlines()
    assert [line.split()[1] for line in logs] == ["submitted", "cancelled"]
    assert [j["id"] for j in json.loads(run(env, "jobs", "--json").stdout)] == [model_id]
    everything = json.loads(run(env, "jobs", "--all", "--json").stdout)
    assert {j["id"]: j["state"] for j in everything}[hold_id] == "CANCELLED"


def test_an_institution_token_submits_to_its_leaves_and_sees_only_its_own(env_for):
    a, b = env_for("a"), env_for("b")
    r = run(a, "submit", "hold", "--seconds", "1", "--slices", "1", "--account", "uni-a/nlp")
    assert r.exit_code == 0, r.output
    job_id = r.stdout.strip()
    for argv in (("job", "show", job_id), ("cancel", job_id), ("logs", job_id)):
        r = run(b, *argv)
        assert (r.exit_code, r.stderr.strip()) == (1, f"Error: no job {job_id}"), argv
    assert job_id not in [str(j["id"]) for j in json.loads(run(b, "jobs", "--all", "--json").stdout)]
    rows = json.loads(run(b, "share", "--json").stdout)
    assert [r["account"] for r in rows] == ["uni-b"]
    rows = json.loads(run(a, "share", "--json").stdout)
    assert [r["account"] for r in rows] == ["uni-a", "uni-a/nlp", "uni-a/vision"]


def test_errors_are_one_line_exit_1_and_usage_errors_exit_2(env_for):
    env = env_for("a_vision")
    cases = [
        (("submit", "alexnet", "--framework", "pytorch", "--slices", "1"), 1, "unknown model 'alexnet'"),
        (("submit", "hold", "--seconds", "1", "--slices", "0"), 1, "slices must be an integer 1 to"),
        (("submit", "hold", "--seconds", "inf", "--slices", "1"), 1, "seconds must be 0 to"),
        (("submit", "hold", "--seconds", "1", "--slices", "1", "--count", "0"), 1, "count must be an integer 1 to"),
        (("submit", "hold", "--seconds", "1", "--slices", "99"), 1, "more than any node holds"),
        (("submit", "hold", "--seconds", "1", "--slices", "1", "--account", "uni-b"), 1, "unknown account uni-b"),
        (("job", "show", "123456"), 1, "no job 123456"),
        (("submit", "hold", "--seconds", "1"), 2, "Missing option '--slices'"),
        (("submit", "hold", "--slices", "one"), 2, "'one' is not a valid integer"),
        (("submit", "vgg16", "--framework", "jax", "--slices", "1"), 2, "Invalid value for '--framework'"),
        (("cancel",), 2, "Missing argument"),
    ]
    for argv, code, phrase in cases:
        r = run(env, *argv)
        assert r.exit_code == code, (argv, r.output)
        assert phrase in r.stderr, (argv, r.stderr)
        if code == 1:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unreachable_server_and_missing_token(env_for, tmp_path):
    from live_server import refused_url

    with refused_url() as dead:
        r = run(env_for("a", FAIRGPU_URL=dead), "jobs")
    assert r.exit_code == 1 and f"cannot reach the fairgpu server at {dead}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run(env_for(None), "jobs")
    assert r.exit_code == 1 and "no API token" in r.stderr
    r = run(env_for(None, FAIRGPU_TOKEN="fg_wrong"), "jobs")
    assert (r.exit_code, r.stderr.strip()) == (1, "Error: invalid, expired or revoked token")


def test_login_saves_a_private_config_the_other_commands_use(live, env_for, tmp_path):
    bare = env_for(None, FAIRGPU_URL=None)
    r = run(bare, "login", "--url", live.url, "--token", "fg_wrong")
    assert r.exit_code == 1 and not (tmp_path / "config" / "fairgpu" / "config.json").exists()
    r = run(bare, "login", "--url", live.url, "--token", live.tokens["b"])
    assert r.exit_code == 0 and f"logged in to {live.url} as uni-b" in r.stdout
    path = tmp_path / "config" / "fairgpu" / "config.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": live.url, "token": live.tokens["b"]}
    r = run(bare, "submit", "hold", "--seconds", "1", "--slices", "1", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(run(bare, "share", "--json").stdout)
    assert [row["account"] for row in rows] == ["uni-b"]
    # --db (the admin's direct view) wins over the login file
    rows = json.loads(run({**bare, "FAIRGPU_DB": live.db_url}, "share", "--json").stdout)
    assert {row["account"] for row in rows} == {"uni-a", "uni-a/vision", "uni-a/nlp", "uni-b"}


def test_admin_token_commands_on_the_database(live, env_for):
    db = ["--db", live.db_url]
    r = run({}, "admin", "token", "issue", "uni-b", "--expires", "30d", "--name", "ci", *db)
    assert r.exit_code == 0, r.output
    raw = r.stdout.strip()
    assert raw.startswith("fg_") and "shown only now" in r.stderr and raw not in r.stderr
    listed = json.loads(run({}, "admin", "token", "list", "--json", *db).stdout)
    mine = [t for t in listed if t["name"] == "ci"]
    assert len(mine) == 1 and mine[0]["state"] == "active" and raw not in json.dumps(listed)
    assert run(env_for(None, FAIRGPU_TOKEN=raw), "jobs").exit_code == 0
    r = run({}, "admin", "token", "revoke", mine[0]["prefix"], *db)
    assert r.exit_code == 0 and "revoked token" in r.stderr
    r = run(env_for(None, FAIRGPU_TOKEN=raw), "jobs")
    assert (r.exit_code, r.stderr.strip()) == (1, "Error: invalid, expired or revoked token")
    for argv, code in ((("issue", "nobody"), 1), (("issue",), 2), (("revoke", "999999"), 1),
                       (("issue", "uni-b", "--expires", "soon"), 1)):
        assert run({}, "admin", "token", *argv, *db).exit_code == code, argv
