"""`jobs`, `job show`, `logs` (--tail, --follow) and `share --explain` through CliRunner
against a live server whose results directory holds the jobs' output."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from live_server import now, seed_tokens, start
from scheduler.runtime import jobfiles
from scheduler.cli import main
from scheduler.cli.client import Api
from scheduler.cli.views import show_logs
from scheduler.services import accounts, jobs
from scheduler.services.usage import add_usage
from scheduler.store import JobState, session_scope, transition

runner = CliRunner()


def seed(engine) -> dict[str, str]:
    """live_server's accounts, with all the usage so far uni-b's (weight 1 of 3)."""
    tokens = seed_tokens(engine)
    with session_scope(engine) as s:
        add_usage(s, [(accounts.get_account(s, "uni-b").id, 3600.0, now())])
    return tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    live = start(root / "fairgpu.db", seed=seed, results_dir=root / "results")
    live.results = root / "results"
    yield live
    live.stop()


@pytest.fixture
def env(server, tmp_path):
    def make(role: str) -> dict:
        return {"FAIRGPU_URL": server.url, "FAIRGPU_TOKEN": server.tokens[role],
                "XDG_CONFIG_HOME": str(tmp_path / "config"), "FAIRGPU_DB": None}

    return make


def cli(env, *argv):
    r = runner.invoke(main, list(argv), env=env)
    assert r.exit_code == 0, r.output
    return r.stdout


def new_job(server, account="uni-a/vision", slices=1, seconds=60.0, running=False, gpu=0) -> int:
    with session_scope(server.engine) as s:
        (job_id,) = jobs.submit_array(s, count=1, account=account, model="hold", framework=None, mode="train",
                                      slices=slices, spec={"seconds": seconds}, at=now())
        if running:
            transition(s, jobs.get_job(s, job_id, None), JobState.RUNNING, at=now(), node="gpu-box-1", gpu=gpu,
                       gpu_slices=[[gpu, slices]])
        return job_id


def write(server, job_id, attempt, text):
    path = jobfiles.log_path(server.results, job_id, attempt)
    jobfiles.ensure_dir(path.parent)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def end(server, job_id):
    with session_scope(server.engine) as s:
        job = jobs.get_job(s, job_id, None)
        if not JobState(job.state).is_finished():
            jobs.cancel(s, job_id, None, now())


def test_jobs_and_job_show_give_progress_position_start_and_why_it_ended(server, env):
    from scheduler.loop.apply import finish, set_progress

    running = new_job(server, slices=4, running=True)
    with session_scope(server.engine) as s:
        set_progress(s, running, {"step": 40, "steps": 200, "samples_per_second": 812.4, "eta_s": 12.2,
                                  "updated_at": now().timestamp()})
    waiting = new_job(server, account="uni-a/nlp", slices=4)
    failed = new_job(server, account="uni-a/nlp", running=True, gpu=1)
    with session_scope(server.engine) as s:
        finish(s, jobs.get_job(s, failed, None), ok=False, at=now(), result=None,
               error="ValueError: loss is nan\nTraceback (most recent call last): ...")
    try:
        lines = cli(env("a"), "jobs", "--all").splitlines()
        assert max(map(len, lines)) <= 80 and lines[0].split() == [
            "id", "account", "model", "slices", "state", "node(reason)", "progress"]
        table = " ".join(" ".join(lines).split())
        assert f"{running} uni-a/vision hold 4 RUNNING gpu-box-1 40/200 eta 12s" in table
        assert f"{failed} uni-a/nlp hold 1 FAILED ValueError: ..." in table
        assert f"{waiting} uni-a/nlp hold 4 PENDING" in table
        picked = cli(env("a"), "jobs", "--format", "id,position,progress").splitlines()
        assert picked[0].split() == ["id", "position", "progress"]
        assert {line.split()[0]: line.split()[1:] for line in picked[1:]} == {
            str(running): ["-", "40/200", "eta", "12s"], str(waiting): ["1", "-"]}
        r = runner.invoke(main, ["jobs", "--format", "id,user"], env=env("a"))
        assert r.exit_code == 2 and "unknown field 'user' (known: id, account," in r.stderr
        rows = {r["id"]: r for r in json.loads(cli(env("a"), "jobs", "--json"))}
        assert rows[running]["progress"]["step"] == 40 and rows[running]["progress"]["updated_at"].endswith("+00:00")
        assert rows[waiting]["position"] == 1 and rows[waiting]["estimated_start"] is not None
        assert rows[running]["position"] is None and rows[waiting]["progress"] is None
        shown = cli(env("a"), "job", "show", str(running))
        assert "progress:        40/200 812/s eta 12s (reported " in shown
        shown = cli(env("a"), "job", "show", str(waiting))
        assert "position:        1\n" in shown and "estimated_start: 20" in shown
    finally:
        for j in (running, waiting):
            end(server, j)


def test_logs_show_events_then_output_per_attempt_and_a_tail(server, env):
    job_id = new_job(server, running=True)
    with session_scope(server.engine) as s:
        transition(s, jobs.get_job(s, job_id, None), JobState.PENDING, at=now(), event="requeued",
                   message="attempt 1 lost its worker or node")
        transition(s, jobs.get_job(s, job_id, None), JobState.RUNNING, at=now(), node="gpu-box-1", gpu=0,
                   gpu_slices=[[0, 1]])
    write(server, job_id, 1, "loading\nstep 1\n")
    write(server, job_id, 2, "resumed\nstep 2\nstep 3\n")
    try:
        out = cli(env("a_vision"), "logs", str(job_id)).splitlines()  # in time order
        assert [line if line.startswith("---") else line.split()[1] if " " in line else line for line in out] == [
            "submitted", "admitted", "--- attempt 1 ---", "loading", "1", "requeued", "admitted",
            "--- attempt 2 ---", "resumed", "2", "3"]
        assert out[4] == "step 1" and out[-1] == "step 3"
        out = cli(env("a_vision"), "logs", str(job_id), "--tail", "2").splitlines()
        assert out[4:] == ["--- attempt 2 ---", "step 2", "step 3"]
        r = runner.invoke(main, ["logs", str(job_id), "--tail", "-1"], env=env("a_vision"))
        assert (r.exit_code, r.stderr.strip()) == (1, "Error: tail must be an integer 0 to 100,000 lines (got -1)")
    finally:
        end(server, job_id)
    # a finished job: --follow prints everything once and returns
    out = cli(env("a_vision"), "logs", str(job_id), "--follow").splitlines()
    assert out[-1].split()[1] == "cancelled" and out[-2] == "step 3" and out.count("--- attempt 2 ---") == 1


def test_follow_prints_only_what_is_new_until_the_job_ends(server):
    job_id = new_job(server, running=True)
    write(server, job_id, 1, "step 1\nstep")
    api = Api(server.url, server.tokens["a"])
    printed, polls = [], []

    def echo(text="", nl=True):
        printed.append(text + ("\n" if nl else ""))

    def sleep(seconds):  # each poll, the task moves on; on the third the job ends
        polls.append(seconds)
        if len(polls) == 1:
            write(server, job_id, 1, " 2\n")
        elif len(polls) == 2:
            write(server, job_id, 1, "step 3\n")
        else:
            end(server, job_id)

    show_logs(lambda params: api.call("GET", f"/v1/jobs/{job_id}/logs", params=params), follow=True, echo=echo,
              sleep=sleep, poll_s=0.5)
    lines = "".join(printed).splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["submitted", "admitted"]
    assert lines[2:6] == ["--- attempt 1 ---", "step 1", "step 2", "step 3"]
    assert lines[6].split()[1:] == ["cancelled", "cancelled", "by", "the", "user"] and len(lines) == 7
    assert polls == [0.5, 0.5, 0.5]


def test_ctrl_c_ends_a_follow_quietly(server):
    job_id = new_job(server)
    api = Api(server.url, server.tokens["a"])
    printed = []

    def interrupt(_seconds):
        raise KeyboardInterrupt

    try:
        show_logs(lambda params: api.call("GET", f"/v1/jobs/{job_id}/logs", params=params), follow=True,
                  echo=lambda text="", nl=True: printed.append(text), sleep=interrupt)
    finally:
        end(server, job_id)
    assert len(printed) == 1 and "submitted" in printed[0]


def test_share_explain_says_why_in_words(server, env):
    rows = json.loads(cli(env("b"), "share", "--explain", "--json"))
    assert [r["account"] for r in rows] == ["uni-b"]
    (b,) = rows
    assert b["usage_to_share"] == pytest.approx(3.0) and b["owed_slices"] == 0 and b["got_slices"] == 0
    assert b["cause"] == ("your usage over the last half-life is 3.0x your share; you have no running or waiting "
                          "jobs, so you are owed nothing now (your share goes to the others)")
    waiting = new_job(server, account="uni-a/nlp", slices=2)
    try:
        table = " ".join(cli(env("a"), "share", "--explain").split())
        assert table.startswith("account owed_slices got_slices fairshare_factor usage_to_share cause")
        assert ("uni-a/nlp 2 0 1 0 no recorded usage: your factor is 1, the highest; you are owed 2 slices more: "
                "you go before accounts at or over their entitlement, the highest factor first; by factor 1st of 2 "
                "under uni-a, level with uni-a/vision") in table
    finally:
        end(server, waiting)
    assert "owed" not in " ".join(cli(env("a"), "share").split())  # the plain report is unchanged


def test_estimates_are_kept_briefly_but_a_new_job_gets_one_at_once(server, env):
    first = new_job(server, account="uni-a/vision", slices=1)
    try:
        assert json.loads(cli(env("a"), "jobs", "--json"))[0]["position"] == 1  # replayed, and kept
        second = new_job(server, account="uni-a/vision", slices=1)
        rows = {r["id"]: r for r in json.loads(cli(env("a"), "jobs", "--json"))}
        assert rows[first]["position"] == 1 and rows[second]["position"] == 2
        assert rows[second]["estimated_start"] is not None
    finally:
        end(server, first)
        end(server, second)
