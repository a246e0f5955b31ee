"""How `jobs`, `job show` and `logs` put a job's progress, times and output into words (pure)."""
from __future__ import annotations

from scheduler.cli.views import LogPrinter, duration, progress_text, show_value, table_row

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
        "submitted_at": None, "started_at": None, "finished_at": None}
    assert show_value("progress", progress) == "1/2 eta 5s (reported 2026-11-28T09:00:10+00:00)"
    assert show_value("position", None) == "-" and show_value("position", 3) == "3"


def test_log_output_gets_attempt_headers_and_lines_are_not_glued():
    out = []
    p = LogPrinter(lambda text="", nl=True: out.append(text + ("\n" if nl else "")))
    p.events([{"id": 1, "at": "t1", "kind": "submitted", "message": None}])
    p.output([{"attempt": 1, "offset": 0, "text": "a\nb"}])
    p.events([{"id": 4, "at": "t2", "kind": "requeued", "message": "lost its node"}])
    p.output([{"attempt": 1, "offset": 3, "text": "c\n"}, {"attempt": 2, "offset": 0, "text": "d"}])
    p.end()
    assert "".join(out) == ("t1  submitted\n--- attempt 1 ---\na\nb\nt2  requeued   lost its node\n"
                            "--- attempt 1 ---\nc\n--- attempt 2 ---\nd\n")
    assert p.last_event == 4
