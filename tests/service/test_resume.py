"""A preempted model job resumes from its checkpoint on its next attempt: a real embedded
server (local Ray, SQLite), a conv6 training job on one account's slices, and a second
account whose guarantee reclaims them."""
from __future__ import annotations

import pytest
from service_helpers import account, jobs, start_server, submit, wait_for, wait_states


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("resume"), gpus=1, checkpoint_grace_s=30.0)  # 4 slices
    yield s
    s.stop()


def test_a_preempted_training_job_resumes_from_its_checkpoint(server):
    lab = account(server, "trainer")
    other = account(server, "guaranteed", guaranteed=2)
    # 400 steps: the reclaim comes within a few seconds of step 20, long before the last
    # step even on a fast machine (0.02 s a step), and the run after it stays short
    [job_id] = submit(lab, model="conv6", framework="pytorch", slices=4, steps=400, batch_size=2)
    wait_for(lambda: (p := jobs(lab)[job_id].get("progress")) and p["step"] >= 20, timeout=180,
             what="the job to train a while", show=lambda: jobs(lab)[job_id])
    [hold] = submit(other, seconds=1, slices=2)  # below its guarantee: reclaims two of the job's slices
    wait_for(lambda: jobs(lab)[job_id]["preemptions"] >= 1, timeout=90, what="the job to be preempted")
    done = wait_states(lab, [job_id], timeout=600)[job_id]
    assert wait_states(other, [hold])[hold]["state"] == "SUCCEEDED"
    assert done["state"] == "SUCCEEDED" and done["attempts"] >= 2, done
    result = done["result"]
    assert result["resumed_from_step"] and result["resumed_from_step"] >= 20  # not from step 0
    log = lab.get(f"/v1/jobs/{job_id}/logs").json()
    text = "".join(o["text"] for o in log["output"])
    assert "checkpoint saved at step" in text and f"resumed from checkpoint at step {result['resumed_from_step']}" in text
