"""What an institution sees of its jobs through the API: progress, position and estimated
start, why a job ended, its logs (tail, cursor, events after one seen), and its share
explained; on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api_helpers import T0, bearer
from scheduler.runtime import jobfiles
from scheduler.loop.apply import finish, set_progress
from scheduler.services import accounts, jobs, logs
from scheduler.services.usage import add_usage
from scheduler.services.share import EXPLAIN_KEYS
from scheduler.store import JobState, session_scope, transition

T = T0.timestamp()


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"


@pytest.fixture
def api(seeded, results):
    from scheduler.api import create_app

    with TestClient(create_app(seeded.engine, clock=seeded.clock, results_dir=str(results))) as c:
        yield c


def submit(seeded, account="uni-a/vision", slices=1, seconds=None, time_limit_s=None) -> int:
    spec, model, framework = ({"seconds": seconds}, "hold", None) if seconds is not None else ({}, "resnet18",
                                                                                               "pytorch")
    with session_scope(seeded.engine) as s:
        (job_id,) = jobs.submit_array(s, count=1, account=account, model=model, framework=framework, mode="train",
                                      slices=slices, spec=spec, at=T0)
        if time_limit_s is not None:
            jobs.get_job(s, job_id, None).time_limit_s = time_limit_s
        return job_id


def run(seeded, job_id, gpu, slices, at=T0):
    with session_scope(seeded.engine) as s:
        transition(s, jobs.get_job(s, job_id, None), JobState.RUNNING, at=at, node="n1", gpu=gpu,
                   gpu_slices=[[gpu, slices]])


def get(api, seeded, path, role="a", **params):
    return api.get(path, headers=bearer(seeded.tokens[role]), params=params)


def test_rows_carry_progress_position_estimated_start_and_why_jobs_ended(api, seeded):
    running = submit(seeded, slices=4, time_limit_s=600)
    run(seeded, running, gpu=0, slices=4, at=T0 - timedelta(seconds=60))
    held = submit(seeded, account="uni-a/nlp", slices=4, seconds=30)
    run(seeded, held, gpu=1, slices=4)
    with session_scope(seeded.engine) as s:
        set_progress(s, running, {"step": 40, "steps": 200, "samples_per_second": 812.5, "eta_s": 12.0,
                                  "updated_at": T - 1})
        add_usage(s, [(accounts.get_account(s, "uni-a/vision").id, 10_000.0, T0)])
    waiting_b = submit(seeded, account="uni-b", slices=4, seconds=10)
    waiting_a = submit(seeded, account="uni-a/nlp", slices=4, seconds=10)
    failed, cancelled, timed_out = (submit(seeded, account="uni-a/nlp", seconds=1) for _ in range(3))
    for j in (failed, timed_out):
        run(seeded, j, gpu=0, slices=0)
    with session_scope(seeded.engine) as s:
        finish(s, jobs.get_job(s, failed, None), ok=False, at=T0, result=None,
               error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB " + "x" * 100 + "\nTraceback")
        jobs.cancel(s, cancelled, None, T0)
        transition(s, jobs.get_job(s, timed_out, None), JobState.TIMEOUT, at=T0, event="timeout",
                   reason="TimeLimit", message="ran past its time limit of 1m")

    rows = {r["id"]: r for r in get(api, seeded, "/v1/jobs", all="true").json()}
    assert list(rows[running]) == list(jobs.PUBLIC_KEYS)
    assert rows[running]["progress"] == {"step": 40, "steps": 200, "samples_per_second": 812.5, "eta_s": 12.0,
                                         "updated_at": (T0 - timedelta(seconds=1)).isoformat()}
    assert rows[running]["time_limit_s"] == 600 and rows[running]["position"] is None
    assert rows[waiting_a]["progress"] is None
    # Both GPUs are full. GPU 0 frees at T+11 (the running job's progress, before its limit at
    # T+540): uni-b, with no usage, goes before uni-a, which used much. uni-b's job ends at
    # T+21, before the hold frees GPU 1 at T+30: uni-a's job starts then. uni-a sees only
    # its own job, at position 2.
    assert waiting_b not in rows
    assert (rows[waiting_a]["position"], rows[waiting_a]["estimated_start"]) == (
        2, (T0 + timedelta(seconds=21)).isoformat())
    b_rows = get(api, seeded, "/v1/jobs", role="b").json()
    assert [(r["id"], r["position"], r["estimated_start"]) for r in b_rows] == [
        (waiting_b, 1, (T0 + timedelta(seconds=11)).isoformat())]
    shown = get(api, seeded, f"/v1/jobs/{waiting_a}").json()
    assert (shown["position"], shown["estimated_start"]) == (2, rows[waiting_a]["estimated_start"])

    assert rows[failed]["reason"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB " + "x" * 16 + "..."
    assert len(rows[failed]["reason"]) == jobs.REASON_MAX_CHARS and rows[failed]["error"].endswith("\nTraceback")
    assert rows[cancelled]["reason"] == "cancelled by the user"
    assert (rows[timed_out]["state"], rows[timed_out]["reason"]) == ("TIMEOUT", "TimeLimit")
    assert all(rows[j]["position"] is None and rows[j]["estimated_start"] is None
               for j in (failed, cancelled, timed_out))


def _log(results, job_id, attempt, text: str):
    path = jobfiles.log_path(results, job_id, attempt)
    jobfiles.ensure_dir(path.parent)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def twice_run(seeded, seconds=5) -> int:
    """A job in its second attempt (requeued once)."""
    job_id = submit(seeded, seconds=seconds)
    run(seeded, job_id, gpu=0, slices=1)
    with session_scope(seeded.engine) as s:
        transition(s, jobs.get_job(s, job_id, None), JobState.PENDING, at=T0, event="requeued",
                   message="attempt 1 lost its worker or node")
    run(seeded, job_id, gpu=0, slices=1)
    return job_id


def test_logs_give_events_then_output_per_attempt_with_a_cursor_and_a_tail(api, seeded, results):
    job_id = twice_run(seeded)
    _log(results, job_id, 1, "one\ntwo\n")
    _log(results, job_id, 2, "three\nfour")
    body = get(api, seeded, f"/v1/jobs/{job_id}/logs").json()
    assert [e["kind"] for e in body["events"]] == ["submitted", "admitted", "requeued", "admitted"]
    assert body["output"] == [{"attempt": 1, "offset": 0, "text": "one\ntwo\n"},
                              {"attempt": 2, "offset": 0, "text": "three\nfour"}]
    assert (body["cursor"], body["more"], body["state"]) == ("2:10", False, "RUNNING")

    _log(results, job_id, 2, "\nfive\n")  # the task writes on: a follower gets only what is new
    last = body["events"][-1]["id"]
    more = get(api, seeded, f"/v1/jobs/{job_id}/logs", since=body["cursor"], after_event=last).json()
    assert more["events"] == [] and more["output"] == [{"attempt": 2, "offset": 10, "text": "\nfive\n"}]
    assert more["cursor"] == "2:16"
    with session_scope(seeded.engine) as s:
        jobs.cancel(s, job_id, None, T0 + timedelta(seconds=1))
    ended = get(api, seeded, f"/v1/jobs/{job_id}/logs", since=more["cursor"], after_event=last).json()
    assert [e["kind"] for e in ended["events"]] == ["cancelled"] and ended["output"] == []
    assert ended["state"] == "CANCELLED"

    tail = get(api, seeded, f"/v1/jobs/{job_id}/logs", tail=3).json()
    assert tail["output"] == [{"attempt": 2, "offset": 0, "text": "three\nfour\nfive\n"}]
    tail = get(api, seeded, f"/v1/jobs/{job_id}/logs", tail=4).json()
    assert [c["text"] for c in tail["output"]] == ["two\n", "three\nfour\nfive\n"]
    assert tail["output"][0]["offset"] == 4 and tail["cursor"] == "2:16"
    assert get(api, seeded, f"/v1/jobs/{job_id}/logs", tail=0).json()["output"] == []


def test_logs_refuse_bad_parameters_with_one_line(api, seeded):
    job_id = submit(seeded, seconds=1)
    for params, phrase in (({"since": "abc"}, "since must be <attempt>:<byte offset>"),
                           ({"since": "0:5"}, "since attempt must be an integer 1 to"),
                           ({"tail": -1}, "tail must be an integer 0 to 100,000 lines"),
                           ({"tail": 10**6}, "tail must be an integer 0 to 100,000 lines"),
                           ({"after_event": 0}, "after_event must be an integer 1 to")):
        r = get(api, seeded, f"/v1/jobs/{job_id}/logs", **params)
        assert r.status_code == 422 and r.json()["detail"].startswith(phrase), (params, r.json())
    assert get(api, seeded, f"/v1/jobs/{job_id}/logs", role="b", tail=1).status_code == 404


def test_a_job_without_files_shows_its_results_log(seeded):
    from scheduler.api import create_app

    job_id = submit(seeded, seconds=1)
    run(seeded, job_id, gpu=0, slices=1)
    with session_scope(seeded.engine) as s:
        finish(s, jobs.get_job(s, job_id, None), ok=True, at=T0, result={"held_s": 1, "log": "held 1 GPU\n"},
               error=None)
    with TestClient(create_app(seeded.engine, clock=seeded.clock)) as c:  # no results_dir
        body = c.get(f"/v1/jobs/{job_id}/logs", headers=bearer(seeded.tokens["a"])).json()
    assert body["output"] == [{"attempt": 1, "offset": 0, "text": "held 1 GPU\n"}] and body["cursor"] == "1:11"


def test_output_reads_are_bounded_and_cut_on_lines_and_characters(seeded, results):
    job_id = twice_run(seeded)
    _log(results, job_id, 1, "é" * 10)  # 20 bytes, no newline
    _log(results, job_id, 2, "ab\ncd\nef\n")
    with session_scope(seeded.engine) as s:
        job = jobs.get_job(s, job_id, None)
        first = logs.read_output(results, job, limit=7)
        assert [(c.attempt, c.text) for c in first.chunks] == [(1, "ééé")] and first.more  # not half a character
        assert str(first.cursor) == "1:6"
        texts, out = [], first
        while out.more:
            out = logs.read_output(results, job, since=out.cursor, limit=7)
            texts += [(c.attempt, c.text) for c in out.chunks]
        assert texts == [(1, "ééé"), (1, "ééé"), (1, "é"), (2, "ab\n"), (2, "cd\nef\n")]
        assert str(out.cursor) == "2:9"
        # a tail under a byte budget keeps whole lines, the newest
        assert [c.text for c in logs.read_output(results, job, tail=100, limit=5).chunks] == ["ef\n"]


def test_a_character_being_written_waits_and_a_long_last_line_still_tails(seeded, results):
    job_id = submit(seeded, seconds=1)
    run(seeded, job_id, gpu=0, slices=1)
    path = jobfiles.log_path(results, job_id, 1)
    jobfiles.ensure_dir(path.parent)
    path.write_bytes(b"ok \xc3")  # the task is halfway through writing "é"
    with session_scope(seeded.engine) as s:
        job = jobs.get_job(s, job_id, None)
        first = logs.read_output(results, job)
        assert [c.text for c in first.chunks] == ["ok "] and (str(first.cursor), first.more) == ("1:3", False)
        with open(path, "ab") as f:
            f.write(b"\xa9" + "x".encode() * 50 + b"\n")
        after = logs.read_output(results, job, since=first.cursor)
        assert [c.text for c in after.chunks] == ["é" + "x" * 50 + "\n"] and str(after.cursor) == "1:56"
        assert [c.text for c in logs.read_output(results, job, tail=1, limit=10).chunks] == ["x" * 9 + "\n"]


def test_share_explain_answers_in_words_for_the_callers_accounts(api, seeded):
    rows = get(api, seeded, "/v1/share/explain").json()
    assert [r["account"] for r in rows] == ["uni-a", "uni-a/nlp", "uni-a/vision"]
    assert all(tuple(r) == EXPLAIN_KEYS for r in rows)
    assert rows[0]["cause"].startswith("no recorded usage: your factor is 1, the highest; you have no running")
    assert get(api, seeded, "/v1/share/explain", role="b", account="uni-a").status_code == 404
    assert [r["account"] for r in get(api, seeded, "/v1/share/explain", role="b").json()] == ["uni-b"]


def test_the_document_declares_the_answers(api):
    from scheduler.api.outputs import JobLogs, JobPublic, ShareExplained

    assert tuple(JobPublic.model_fields) == jobs.PUBLIC_KEYS
    assert tuple(ShareExplained.model_fields) == EXPLAIN_KEYS
    assert set(JobLogs.model_fields) == {"id", "state", "events", "output", "cursor", "more"}
    paths = api.get("/openapi.json").json()["paths"]
    answer = paths["/v1/jobs/{job_id}/logs"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/JobLogs"}
    assert {p["name"] for p in paths["/v1/jobs/{job_id}/logs"]["get"]["parameters"]} == {
        "job_id", "tail", "since", "after_event"}
