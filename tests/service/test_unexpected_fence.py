"""A fence marker is only ever the server's, end to end on the embedded server (real Ray,
real SQLite): a job whose attempt's result file something other than the server fenced
first is queued again without spending a retry when its task's publish fails (Ray hands
the loop the task's `Fenced` error), and then succeeds: it never ends FAILED."""
from __future__ import annotations

import json

import pytest
from service_helpers import account, start_server, submit, wait_states
from sqlmodel import select

from scheduler.runtime import jobfiles
from scheduler.store import JobEvent, session_scope


@pytest.mark.slow
def test_a_forged_fence_requeues_the_job_and_it_succeeds(tmp_path):
    server = start_server(tmp_path, gpus=1, warm_up=False, retry_limit=1)  # a spent retry would fail it
    try:
        client = account(server, "victim")
        root = str(tmp_path / "results")
        # the next job's first attempt, fenced before it runs, by something that is not the server
        path = jobfiles.result_path(root, 1, 1)
        jobfiles.ensure_dir(path.parent)
        path.write_text(json.dumps({"fenced": True}))
        [job_id] = submit(client, seconds=0.5)
        assert job_id == 1
        job = wait_states(client, [job_id], timeout=120)[job_id]
        assert (job["state"], job["attempts"], job["error"]) == ("SUCCEEDED", 2, None), job
        with session_scope(server.engine, readonly=True) as s:
            events = [(e.kind, e.message) for e in s.exec(
                select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()]
        kinds = [k for k, _ in events]
        assert "failed" not in kinds and "finished" in kinds, events
        assert ("requeued", "attempt 1's result was fenced, not by the server: queued again (no retry spent)") \
            in events, events
        assert server.loop.health().failures_total == 0
    finally:
        server.stop()
