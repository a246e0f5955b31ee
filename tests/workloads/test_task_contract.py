"""The typed task contract: a job submitted without a batch size runs at its model's
reference batch (every job used to run at 32: a default written on the task's side)."""
from __future__ import annotations

import pytest

from scheduler.services.jobs import submit
from scheduler.store import session_scope
from scheduler.jobfiles import read_result
from scheduler.tasks import TaskPayload, TaskResult, run_job
from workloads import registry


@pytest.mark.parametrize("model", registry.MODELS)
def test_a_job_without_a_batch_size_runs_at_the_reference_batch(model, tmp_path):
    spec = {"steps": 1, "warmup_steps": 0}
    if model == "cyclegan":
        spec["image_size"] = 32  # batch 1 either way; small images keep the test short
    payload = TaskPayload.for_job(job_id=7, attempt=1, model=model, framework="pytorch", mode="train", spec=spec,
                                  num_gpus=0.25, results_dir=str(tmp_path), submitted_at=0.0)
    assert payload.batch_size is None
    result = run_job(payload)
    assert isinstance(result, TaskResult)
    assert result.measurement["batch_size"] == registry.INFO[model].default_batch
    published = read_result(tmp_path, 7, 1)
    assert published["batch_size"] == registry.INFO[model].default_batch
    assert TaskResult.from_record(published) == result


def test_a_given_batch_size_is_kept(tmp_path):
    payload = TaskPayload.for_job(job_id=1, attempt=1, model="conv6", framework="pytorch", mode="train",
                                  spec={"batch_size": 4, "steps": 1, "warmup_steps": 0}, num_gpus=0.25,
                                  results_dir=str(tmp_path), submitted_at=0.0)
    assert payload.workload_spec().resolved_batch_size == 4


def test_the_loop_hands_over_what_was_submitted(tmp_path):
    from loop_world import make_world

    w = make_world(tmp_path)
    with session_scope(w.engine) as s:
        job_id = submit(s, account="lab", model="vgg16", framework="pytorch", mode="train", slices=1,
                        spec={"steps": 5}, at=w.now[0]).id
    w.loop.run_once()
    (start,) = w.executor.starts
    payload = start["payload"]
    assert (payload.job_id, payload.attempt, payload.steps, payload.batch_size) == (job_id, 1, 5, None)
    assert payload.workload_spec().resolved_batch_size == 128
