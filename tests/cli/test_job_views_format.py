"""How `jobs`, `job show` and `logs` put a job's progress, times and output into words (pure)."""
from __future__ import annotations

from scheduler.cli.views import LogPrinter, progress_text, show_value, table_row
from scheduler.cli.formatting import duration

AT = "2026-11-28T09:00:10.123456+00:00"


def test_progress_in_words():
    assert progress_text({"step": 40, "steps": 200, "samples_per_second": 812.4, "eta_s": 12.2}) == \
        "40/200 812/s eta 12s"
    assert progress_text({"step": 12.34, "steps": 60.0, "samples_per_second": None, "eta_s": 47.7}) == \
        "12/60 eta 48s"  # a hold job: seconds held
    assert progress_text({"step": 3, "steps": None, "samples_per_second": 2.345, "eta_s": None}) == "3 2.35/s"
    assert progress_text(None) is None and progress_text({"step": None}) is None
    assert [duration(s) for s in (0, 59.6, 200, 3700, 200000)] == ["0s", "1m00s", "3m20s", "1h01m", "2d07h"]


def test_the_table_shows_times_to_the_second_and_only_the_current_attempts_progress():
    progress = {"step": 1, "steps": 2, "samples_per_second": None, "eta_s": 5, "updated_at": AT}
    row = table_row({"state": "RUNNING", "progress": progress, "started_at": "2026-11-28T09:00:00+00:00",
                     "submitted_at": AT, "estimated_start": None})
    assert (row["progress"], row["submitted_at"], row["started_at"]) == (
        "1/2 eta 5s", "2026-11-28T09:00:10+00:00", "2026-11-28T09:00:00+00:00")
    earlier = table_row({"state": "RUNNING", "progress": progress, "started_at": "2026-11-28T09:01:00+00:00"})
    assert earlier["progress"] is None  # reported before this attempt started
    assert table_row({"state": "PENDING", "progress": progress, "estimated_start": AT}) == {
        "state": "PENDING", "progress": None, "estimated_start": "2026-11-28T09:00:10+00:00",
        "submitted_at": None, "started_at": None, "finished_at": None, "node_reason": None, "time_limit": None}
    assert show_value("progress", progress) == "1/2 eta 5s (reported 2026-11-28T09:00:10+00:00)"
    assert show_value("position", None) == "-" and show_value("position", 3) == "3"


def test_log_output_goes_between_its_attempts_events_with_one_header_each():
    out = []
    p = LogPrinter(lambda text="", nl=True: out.append(text + ("\n" if nl else "")))
    p.read([{"id": 1, "at": "2026-11-28T09:00:00+00:00", "kind": "submitted", "message": None},
            {"id": 2, "at": "2026-11-28T09:00:01+00:00", "kind": "admitted", "message": None}],
           [{"attempt": 1, "offset": 0, "text": "a\nb"}])
    # the next poll: the rest of attempt 1's output, the requeue that ended it, attempt 2
    p.read([{"id": 4, "at": "2026-11-28T09:00:05+00:00", "kind": "requeued", "message": "lost its node"},
            {"id": 5, "at": "2026-11-28T09:00:06+00:00", "kind": "admitted", "message": None}],
           [{"attempt": 1, "offset": 3, "text": "c\n"}, {"attempt": 2, "offset": 0, "text": "d"}])
    # an event while attempt 2 is followed: its output goes on below it, with no second header
    p.read([{"id": 6, "at": "2026-11-28T09:00:07.5+00:00", "kind": "checkpoint", "message": None}],
           [{"attempt": 2, "offset": 1, "text": "e\n"}])
    p.end()
    assert "".join(out) == (
        "2026-11-28T09:00:00+00:00  submitted\n2026-11-28T09:00:01+00:00  admitted\n--- attempt 1 ---\na\nbc\n"
        "2026-11-28T09:00:05+00:00  requeued   lost its node\n2026-11-28T09:00:06+00:00  admitted\n"
        "--- attempt 2 ---\nd\n2026-11-28T09:00:07+00:00  checkpoint\ne\n")
    assert p.last_event == 6


def test_a_reads_events_are_put_in_time_order_and_an_attempts_output_before_its_end():
    """The "started" event is written when the attempt ends (with Ray's start time), after
    "finished" in id order: the printer puts it back in its place."""
    out = []
    p = LogPrinter(lambda text="", nl=True: out.append(text + ("\n" if nl else "")))
    p.read([{"id": 1, "at": "2026-11-28T09:00:00+00:00", "kind": "submitted", "message": None},
            {"id": 2, "at": "2026-11-28T09:00:01+00:00", "kind": "admitted", "message": None},
            {"id": 3, "at": "2026-11-28T09:00:09+00:00", "kind": "finished", "message": None},
            {"id": 4, "at": "2026-11-28T09:00:01.250+00:00", "kind": "started", "message": "Ray started it"}],
           [{"attempt": 1, "offset": 0, "text": "step 1\n"}])
    p.end()
    assert [line.split()[-1] if "---" not in line else line for line in "".join(out).splitlines()] == [
        "submitted", "admitted", "it", "--- attempt 1 ---", "1", "finished"]


def test_progress_counts_the_steps_asked_for_and_a_finished_job_has_no_eta():
    """The task writes progress without the warm-up (`--steps 3`, 3 warm-up steps: the
    workload's step 5 of 6 is the job's 2 of 3), and a finished job's ETA is not shown."""
    import json

    from scheduler.runtime import jobfiles
    from scheduler.runtime.tasks import TaskPayload, _hooks
    from workloads.hooks import Progress

    def written(tmp, steps, warmup):
        payload = TaskPayload.for_job(job_id=7, attempt=1, model="conv6", framework="pytorch", mode="train",
                                      spec={"steps": steps, **({"warmup_steps": warmup} if warmup is not None
                                                                else {})},
                                      num_gpus=0.25, results_dir=str(tmp), submitted_at=0.0)
        hooks = _hooks(payload, None)
        return hooks, lambda: json.loads((jobfiles.job_dir(str(tmp), 7) / jobfiles.PROGRESS_FILE).read_text())

    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        hooks, read = written(tmp, 3, None)  # the default warm-up: 3 steps
        hooks.on_step(Progress(5, 6, 10.0, 1.5, 0.3))
        assert (read()["step"], read()["steps"]) == (2, 3)
        hooks.on_step(Progress(6, 6, 10.0, 0.0, 0.3))  # the last step is always written
        assert (read()["step"], read()["steps"]) == (3, 3)
    with tempfile.TemporaryDirectory() as tmp:
        hooks, read = written(tmp, 4, 2)
        hooks.on_step(Progress(1, 6, None, None, None))  # still warming up
        assert (read()["step"], read()["steps"]) == (0, 4)
    progress = {"step": 3, "steps": 3, "samples_per_second": None, "eta_s": 4.0, "updated_at": AT}
    assert show_value("progress", progress) == "3/3 eta 4s (reported 2026-11-28T09:00:10+00:00)"
    assert show_value("progress", progress, finished=True) == "3/3 (reported 2026-11-28T09:00:10+00:00)"


def test_times_are_iso_8601_and_figures_are_rounded_for_people():
    from scheduler.cli.formatting import figure, times_in, when

    assert show_value("task_started_at", 1796000000.25) == "2026-11-30T00:53:20+00:00"
    assert times_in({"result": {"task_started_at": 1796000000.25, "samples_per_second": 812.4, "n": 3},
                     "events": [{"at": 1796000000}], "submitted_at": AT}) == {
        "result": {"task_started_at": "2026-11-30T00:53:20.250000+00:00", "samples_per_second": 812.4, "n": 3},
        "events": [{"at": "2026-11-30T00:53:20+00:00"}], "submitted_at": AT}  # exact: microseconds kept
    assert when("not a time") == "not a time" and when(None) is None
    assert [figure(v) for v in (1.578e-05, 0.0, 0.333333, 12, 2030.0, -1e-9, None)] == [
        "<0.01", "0", "0.33", "12", "2030.00", ">-0.01", "-"]
    assert show_value("step_time_p50_s", 0.0123456) == "0.0123" and show_value("time_limit_s", 7200.0) == "2h00m"


def test_the_compact_jobs_table_fits_80_columns_and_format_picks_fields():
    import pytest

    from scheduler.cli.views import DEFAULT_FORMAT, columns, parse_format

    running = {"id": 12345, "account": "uni-a/vision", "model": "resnet18", "slices": 16, "state": "RUNNING",
               "node": "gpu-node-0001", "started_at": "2026-11-28T09:00:00+00:00", "reason": None,
               "progress": {"step": 1200, "steps": 2000, "samples_per_second": 812.4, "eta_s": 5000.0,
                            "updated_at": AT}}
    waiting = {"id": 12346, "account": "uni-a/vision", "model": "cyclegan", "slices": 4, "state": "PENDING",
               "reason": "Fragmentation", "position": 12, "estimated_start": AT}
    failed = {"id": 12347, "account": "uni-b", "model": "script", "slices": 1, "state": "CANCELLED",
              "reason": "ValueError: loss is nan after 3 steps and more", "time_limit_s": 3600.0}
    lines = columns([table_row(j) for j in (running, waiting, failed)], parse_format(DEFAULT_FORMAT))
    assert max(map(len, lines)) <= 80, lines
    assert lines[0].split() == ["id", "account", "model", "slices", "state", "node(reason)", "progress"]
    assert lines[1].split() == ["12345", "uni-a/vision", "resnet18", "16", "RUNNING", "gpu-node-0001", "1200/2000",
                                "eta", "1h23m"]  # the rate is `job show`'s
    assert lines[2].split() == ["12346", "uni-a/vision", "cyclegan", "4", "PENDING", "(Fragmentation)", "-"]
    assert lines[3].split()[:6] == ["12347", "uni-b", "script", "1", "CANCELLED", "ValueError:"]
    picked = columns([table_row(waiting)], parse_format("id, position,start,time_limit"))
    assert picked == ["   id position est_start                 time_limit",
                      "12346       12 2026-11-28T09:00:10+00:00 -"]
    with pytest.raises(ValueError, match="unknown field 'nodes'"):
        parse_format("id,nodes")
