"""The loop's rules, without Ray: a FakeExecutor, a clock the test moves, real SQLite."""
from __future__ import annotations

from pathlib import Path

import pytest
from loop_world import break_policy, make_world

from scheduler.runtime.discovery import DiscoveredNode
from scheduler.loop.nodes import NOT_IN_RAY
from scheduler.vocab import RAY_REFUSED
from scheduler.services.capacity import list_nodes
from scheduler.store import JobState, session_scope
from scheduler.runtime.jobfiles import started_path


def test_a_job_outlives_more_restarts_than_its_retry_limit(tmp_path):
    w = make_world(tmp_path, retry_limit=2)
    job_id = w.submit()
    for _ in range(5):  # 5 restarts while it runs: more than its 2 retries
        w.loop.run_once()
        assert w.job(job_id).state == JobState.RUNNING
        w.restart(retry_limit=2)
        assert w.loop.recover()["requeued"] == 1
    w.loop.run_once()
    w.executor.finish(job_id)
    w.loop.run_once()
    job = w.job(job_id)
    assert (job.state, job.attempts, job.failures) == (JobState.SUCCEEDED, 6, 0)


def test_lost_workers_spend_retries_then_the_job_fails(tmp_path):
    w = make_world(tmp_path, retry_limit=3)
    job_id = w.submit()
    for attempt in (1, 2, 3):
        w.loop.run_once()
        w.executor.begin(job_id, w.now[0].timestamp())
        w.executor.finish(job_id, ok=False, infrastructure=True, error="WorkerCrashedError: worker died")
        w.loop.run_once()
    job = w.job(job_id)
    assert (job.state, job.failures) == (JobState.FAILED, 3)
    assert job.error.startswith("gave up after 3 lost attempts")


def test_a_task_error_fails_at_once_and_counts(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit()
    w.loop.run_once()
    w.executor.finish(job_id, ok=False, error="ValueError: bad input")
    w.loop.run_once()
    job = w.job(job_id)
    assert (job.state, job.failures, job.error) == (JobState.FAILED, 1, "ValueError: bad input")


def test_usage_is_charged_from_the_tasks_own_start(tmp_path):
    mono = [1000.0]  # the loop's timers' clock (its metering period)
    w = make_world(tmp_path, monotonic=lambda: mono[0])
    job_id = w.submit(slices=2)
    w.loop.run_once()  # admitted at T0
    w.tick(7)  # Ray's cold start: not charged
    w.executor.begin(job_id, w.now[0].timestamp())
    w.tick(5)
    mono[0] += w.loop.ray_side.usage_period_s
    report = w.loop.run_once()  # meters: 5 s since the task's start, 2 slices
    assert sum(report.usage.values()) == pytest.approx(10.0)


def test_a_task_that_never_started_is_charged_nothing(tmp_path):
    mono = [1000.0]
    w = make_world(tmp_path, monotonic=lambda: mono[0])
    job_id = w.submit()
    w.loop.run_once()
    w.tick(30)
    mono[0] += w.loop.ray_side.usage_period_s
    assert w.loop.run_once().usage == {}
    w.executor.finish(job_id, ok=False, infrastructure=True, error="lost")
    assert w.loop.run_once().usage == {}


def test_a_failing_cycle_is_rolled_back_counted_and_the_next_is_normal(tmp_path, monkeypatch):
    break_policy(monkeypatch, lambda n: ZeroDivisionError("injected fault") if n == 2 else None)
    w = make_world(tmp_path)
    first = w.submit()
    w.loop.run_once()
    second = w.submit()
    with pytest.raises(ZeroDivisionError):
        w.loop.run_once()
    health = w.loop.health()
    assert (health.consecutive_failures, health.failures_total) == (1, 1)
    assert health.last_error == "ZeroDivisionError: injected fault"
    assert w.job(second).state == JobState.PENDING  # nothing of the failed cycle was written
    w.executor.finish(first)
    report = w.loop.run_once()
    assert report.admitted == 1 and report.finished == 1
    assert w.job(second).state == JobState.RUNNING
    assert w.loop.health().consecutive_failures == 0 and w.loop.health().failures_total == 1


def test_run_backs_off_and_keeps_going_after_failures(tmp_path, monkeypatch):
    import threading

    break_policy(monkeypatch, lambda n: RuntimeError("database away") if n <= 3 else None)
    w = make_world(tmp_path)
    w.loop.backoff_s = (0.01, 0.02)
    job_id = w.submit()
    t = threading.Thread(target=w.loop.run, kwargs={"period_s": 0.01})
    t.start()
    try:
        for _ in range(500):
            if w.job(job_id).state == JobState.RUNNING:
                break
            threading.Event().wait(0.01)
    finally:
        w.loop.stop()
        t.join(5)
    assert w.job(job_id).state == JobState.RUNNING
    assert w.loop.health().failures_total == 3


def test_a_job_ray_refuses_is_held_back_then_waits_with_a_reason(tmp_path):
    mono = [1000.0]  # the refusals' backoff clock
    w = make_world(tmp_path, max_refusals=3, monotonic=lambda: mono[0])
    job_id = w.submit()
    w.executor.refuse.add(job_id)
    w.loop.run_once()  # refusal 1: queued again, held back 1 s
    job = w.job(job_id)
    assert (job.state, job.failures) == (JobState.PENDING, 0)
    w.loop.run_once()
    assert w.job(job_id).reason == RAY_REFUSED
    for n in (2, 3):
        mono[0] += 60  # its backoff is over
        w.loop.run_once()
    job = w.job(job_id)
    assert (job.state, job.failures, job.reason) == (JobState.PENDING, 0, RAY_REFUSED)
    assert "refused to place it 3 times" in job.reason_message
    assert len(w.executor.starts) == 0
    w.loop.run_once()
    assert w.job(job_id).attempts == 3  # it stays put: no more tries
    w.executor.refuse.clear()
    w.loop.nodes.capacity_changed()  # as a change of Ray's nodes does
    w.loop.run_once()
    assert w.job(job_id).state == JobState.RUNNING


def test_a_node_declared_by_hand_is_never_placed_on_while_ray_is_the_source(tmp_path):
    w = make_world(tmp_path, discover=True)
    w.executor.nodes = [DiscoveredNode("ray-node-1", 1, "T4", "10.0.0.1")]
    job_ids = [w.submit() for _ in range(6)]
    w.loop.run_once()
    nodes = {n["node"]: n for n in _nodes(w)}
    assert nodes["n1"]["active"] is False and nodes["n1"]["reason"] == NOT_IN_RAY
    assert nodes["ray-node-1"]["active"] is True
    assert {s["node"] for s in w.executor.starts} == {"ray-node-1"}
    assert sum(w.job(j).state == JobState.RUNNING for j in job_ids) == 4


def test_recovery_removes_the_markers_of_lost_attempts(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit()
    w.loop.run_once()
    marker = started_path(w.executor.results_dir, job_id, 1)
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    Path(marker).touch()
    w.restart()
    assert w.loop.recover() == {"finished": 0, "requeued": 1, "failed": 0, "held": 0, "markers_removed": 1}
    assert not Path(marker).exists()


def _nodes(w):
    with session_scope(w.engine, readonly=True) as s:
        from scheduler.store import Node
        from sqlmodel import select

        return [{"node": n.name, "active": n.active, "reason": n.reason} for n in s.exec(select(Node)).all()]


def _limit(w, job_id: int, seconds: float) -> None:
    with session_scope(w.engine) as s:
        s.connection().exec_driver_sql(f"UPDATE job SET time_limit_s = {seconds}, version = version + 1 "
                                       f"WHERE id = {job_id}")


def test_a_job_past_its_time_limit_ends_in_timeout_charged_up_to_the_limit(tmp_path):
    w = make_world(tmp_path)
    job_id = w.submit(seconds=600, slices=2)
    _limit(w, job_id, 60)
    other = w.submit(seconds=600, slices=3)
    w.loop.run_once()
    w.tick(5)
    w.executor.begin(job_id, w.now[0].timestamp())  # Ray started it 5 s after admission
    w.tick(59)
    w.loop.run_once()
    assert w.job(job_id).state == JobState.RUNNING  # 59 s of its 60
    w.tick(30)
    report = w.loop.run_once()
    job = w.job(job_id)
    assert (job.state, job.reason) == (JobState.TIMEOUT, "TimeLimit")
    assert "time limit of 00:01:00" in job.error
    assert report.usage == {job.account_id: pytest.approx(120.0)}  # 60 s x 2 slices, not the 30 s past it
    assert job_id in w.executor.cancelled and job_id not in w.executor.tracked()
    w.loop.run_once()
    assert w.job(other).state == JobState.RUNNING  # its slices went to the next job


def test_a_job_that_finished_in_time_is_not_timed_out(tmp_path):
    from scheduler.runtime.jobfiles import publish_result as _write_result

    w = make_world(tmp_path)
    job_id = w.submit()
    _limit(w, job_id, 10)
    w.loop.run_once()
    start = w.now[0].timestamp()
    w.executor.begin(job_id, start)
    _write_result(w.executor.results_dir, job_id, 1, {"task_started_at": start, "task_finished_at": start + 9})
    w.tick(20)
    w.loop.run_once()
    assert w.job(job_id).state == JobState.SUCCEEDED


def test_running_jobs_progress_reaches_their_rows(tmp_path):
    from scheduler.runtime import jobfiles

    mono = [1000.0]  # the progress rounds' clock
    w = make_world(tmp_path, monotonic=lambda: mono[0])
    job_id = w.submit()
    w.loop.run_once()
    jobfiles.write_progress(w.executor.results_dir, job_id, {"step": 40, "steps": 200, "samples_per_second": 812.5,
                                                             "eta_s": 12.0, "updated_at": 1.0})
    mono[0] += w.loop.attempts.progress_period_s
    w.loop.run_once()
    assert w.job(job_id).progress == {"step": 40, "steps": 200, "samples_per_second": 812.5, "eta_s": 12.0,
                                      "updated_at": 1.0}


def test_a_finished_jobs_files_go_but_its_logs_stay(tmp_path):
    from scheduler.runtime import jobfiles

    w = make_world(tmp_path)
    job_id = w.submit()
    w.loop.run_once()
    root = w.executor.results_dir
    (jobfiles.checkpoint_dir(root, job_id)).mkdir(parents=True)
    jobfiles.write_progress(root, job_id, {"step": 1})
    jobfiles.create_private(jobfiles.log_path(root, job_id, 1)).close()
    w.executor.finish(job_id)
    w.loop.run_once()
    assert w.job(job_id).state == JobState.SUCCEEDED
    assert sorted(p.name for p in jobfiles.job_dir(root, job_id).iterdir()) == ["attempt-1.log"]


def test_a_victim_is_asked_to_checkpoint_before_it_is_cancelled(tmp_path):
    import threading

    from scheduler.runtime import jobfiles
    from scheduler.services.accounts import set_account

    w = make_world(tmp_path, accounts=(("big", 1.0), ("small", 1.0)), checkpoint_grace_s=5.0)
    with session_scope(w.engine) as s:
        set_account(s, "small", guaranteed=2)
    victims = [w.submit(seconds=600, account="big") for _ in range(4)]
    w.loop.run_once()
    for j in victims:
        w.executor.begin(j, w.now[0].timestamp())
    root = w.executor.results_dir
    seen = []

    def task_side():  # what a running task does: save, then remove the request
        for _ in range(400):
            asked = [j for j in victims if jobfiles.checkpoint_requested(root, j)]
            if asked:
                seen.append((asked, list(w.executor.cancelled)))
                for j in asked:
                    jobfiles.acknowledge_checkpoint(root, j)
                return
            threading.Event().wait(0.01)

    t = threading.Thread(target=task_side)
    t.start()
    w.submit(account="small")
    report = w.loop.run_once()
    t.join(5)
    assert report.preempted >= 1
    (asked, cancelled_then), = seen
    assert asked and cancelled_then == []  # asked first, cancelled after
    assert set(w.executor.cancelled) >= set(asked)


def test_nodes_are_named_by_host_and_a_node_too_big_is_listed_with_the_reason(tmp_path):
    w = make_world(tmp_path, discover=True)
    w.executor.nodes = [DiscoveredNode("gpu-box-1", 2, "T4", "10.0.0.1", ray_id="a" * 56, frameworks=("pytorch",)),
                        DiscoveredNode("huge-box", 128, "H200", "10.0.0.2", ray_id="b" * 56)]
    w.loop.run_once()
    nodes = {n["node"]: n for n in _list(w)}
    assert nodes["gpu-box-1"]["active"] and nodes["gpu-box-1"]["ray_id"] == "a" * 56
    assert nodes["gpu-box-1"]["frameworks"] == "pytorch"
    assert not nodes["huge-box"]["active"] and "gpus must be" in nodes["huge-box"]["reason"]
    w.restart(discover=True)
    w.loop.run_once()  # a restart adds no row
    assert sorted(n["node"] for n in _list(w)) == ["gpu-box-1", "huge-box", "n1"]


def _list(w):
    with session_scope(w.engine, readonly=True) as s:
        return list_nodes(s)


def test_a_job_whose_framework_no_node_has_waits_infeasible_and_starts_once_one_can(tmp_path):
    w = make_world(tmp_path, discover=True)
    w.executor.nodes = [DiscoveredNode("gpu-box-1", 1, "T4", "10.0.0.1", ray_id="a" * 56, frameworks=("pytorch",))]
    with session_scope(w.engine) as s:
        from scheduler.services.jobs import submit_array

        (tf,) = submit_array(s, count=1, account="lab", model="conv6", framework="tensorflow", mode="train",
                             slices=1, spec={}, at=w.now[0])
        (torch,) = submit_array(s, count=1, account="lab", model="conv6", framework="pytorch", mode="train",
                                slices=1, spec={}, at=w.now[0])
    w.loop.run_once()
    job = w.job(tf)
    assert (job.state, job.reason) == (JobState.PENDING, "Infeasible")
    assert job.reason_message == "no node can run tensorflow (the nodes have: pytorch)"
    assert w.job(torch).state == JobState.RUNNING
    w.executor.nodes = [DiscoveredNode("gpu-box-1", 1, "T4", "10.0.0.1", ray_id="a" * 56,
                                       frameworks=("pytorch", "tensorflow"))]
    w.loop.nodes.look_again()
    w.loop.run_once()
    assert w.job(tf).state == JobState.RUNNING
