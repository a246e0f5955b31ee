"""The typed task contract: a job submitted without a batch size runs at its model's
reference batch (every job used to run at 32: a default written on the task's side)."""
from __future__ import annotations


from scheduler.services.jobs import submit_array
from scheduler.store import session_scope
from scheduler.runtime.tasks import TaskPayload
from workloads import registry


RUN_EACH_MODEL = """
import json, sys
from scheduler.runtime.jobfiles import read_result
from scheduler.runtime.tasks import TaskPayload, TaskResult, run_job
out = {}
for job_id, model in enumerate(sys.argv[2:], start=1):
    spec = {"steps": 1, "warmup_steps": 0, **({"image_size": 32} if model == "cyclegan" else {})}
    payload = TaskPayload.for_job(job_id=job_id, attempt=1, model=model, framework="pytorch", mode="train",
                                  spec=spec, num_gpus=0.25, results_dir=sys.argv[1], submitted_at=0.0)
    assert payload.batch_size is None
    result = run_job(payload)
    published = read_result(sys.argv[1], job_id, 1)
    assert TaskResult.from_record(published) == result
    out[model] = [result.measurement["batch_size"], published["batch_size"]]
print(json.dumps(out))
"""


def test_a_job_without_a_batch_size_runs_at_the_reference_batch(tmp_path):
    # in a process of its own, as in a Ray worker (a model run in the test process would
    # leave its memory resident there, under the tests that measure RSS)
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", RUN_EACH_MODEL, str(tmp_path), *registry.MODELS],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {m: [registry.INFO[m].default_batch] * 2 for m in registry.MODELS}


def test_a_given_batch_size_is_kept(tmp_path):
    payload = TaskPayload.for_job(job_id=1, attempt=1, model="conv6", framework="pytorch", mode="train",
                                  spec={"batch_size": 4, "steps": 1, "warmup_steps": 0}, num_gpus=0.25,
                                  results_dir=str(tmp_path), submitted_at=0.0)
    assert payload.workload_spec().resolved_batch_size == 4


def test_the_loop_hands_over_what_was_submitted(tmp_path):
    from loop_world import make_world

    w = make_world(tmp_path)
    with session_scope(w.engine) as s:
        (job_id,) = submit_array(s, count=1, account="lab", model="vgg16", framework="pytorch", mode="train",
                                 slices=1, spec={"steps": 5}, at=w.now[0])
    w.loop.run_once()
    (start,) = w.executor.starts
    payload = start["payload"]
    assert (payload.job_id, payload.attempt, payload.steps, payload.batch_size) == (job_id, 1, 5, None)
    assert payload.workload_spec().resolved_batch_size == 128
