"""NvmlSampler actors on a real local Ray: one per GPU node, pinned, holding no CPU or GPU.

One Ray start for the whole module (each costs seconds on 2 cores). The worker
processes import the stand-in NVML named by FAIRGPU_NVML_MODULE, exactly as they
would import pynvml on a GPU node.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import fake_nvml
from scheduler.metrics.exporter import build_registry, render
from scheduler.metrics.sampler import ACTOR_PREFIX, collect, gpu_source, start_samplers
from metrics_fixtures import contended_view
from scheduler.metrics.view import ClusterView


@pytest.fixture(scope="module")
def ray_with_fake_nvml(tmp_path_factory):
    ray = pytest.importorskip("ray")
    state = tmp_path_factory.mktemp("nvml") / "state.json"
    state.write_text(json.dumps({"init_error": None, "devices": [
        fake_nvml.t4(0, util=64, procs=[(4242, 1 << 30)]), fake_nvml.t4(1, util=12, power_mw=None)]}))
    here = str(Path(__file__).parent)
    saved = {k: os.environ.get(k) for k in ("FAIRGPU_NVML_MODULE", "FAKE_NVML_STATE", "PYTHONPATH")}
    os.environ.update(FAIRGPU_NVML_MODULE="fake_nvml", FAKE_NVML_STATE=str(state),
                      PYTHONPATH=os.pathsep.join(filter(None, [here, saved["PYTHONPATH"]])))
    ray.init(num_cpus=2, num_gpus=2, resources={"accelerator_type:T4": 1}, include_dashboard=False,
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_one_pinned_sampler_per_gpu_node_sampling_real_figures(ray_with_fake_nvml):
    ray = ray_with_fake_nvml
    handles = start_samplers(ray)
    (node_id,) = handles
    assert node_id == ray.get_runtime_context().get_node_id()
    reports = collect(ray, handles)
    (report,) = reports
    assert report.ok and report.sample is not None
    assert [d.uuid for d in report.sample.devices] == ["GPU-fake-0000", "GPU-fake-0001"]
    assert report.sample.devices[0].utilisation_ratio == pytest.approx(0.64)
    # the actor holds no CPU and no GPU: all of them stay free for jobs
    assert ray.available_resources().get("GPU") == 2 and ray.available_resources().get("CPU") == 2
    # per-process memory is matched on the node that owns the pid
    assert ray.get(handles[node_id].job_memory.remote({4242: "job-7"})) == {"job-7": 1 << 30}
    # calling again (as after a node joins) reuses the named actor, not a second one
    again = start_samplers(ray)
    assert ray.get(again[node_id].hostname.remote()) == report.hostname
    names = ray.util.list_named_actors()
    assert names.count(ACTOR_PREFIX + node_id) == 1

    # what the publisher gets, and what a scrape then shows
    gpus, nodes = gpu_source(ray)()
    assert [g.utilisation_ratio for g in gpus] == pytest.approx([0.64, 0.12])
    assert nodes == {report.hostname: True}
    view = ClusterView(**{**contended_view(1.0).__dict__, "gpus": gpus, "nvml_nodes": nodes})
    body = render(build_registry(lambda: view)[0])[0].decode()
    assert 'UUID="GPU-fake-0001"' in body and body.count("fairgpu_gpu_power_watts{") == 1


def test_a_dead_sampler_reports_not_ok_instead_of_raising(ray_with_fake_nvml):
    ray = ray_with_fake_nvml
    handles = start_samplers(ray)
    (node_id,) = handles
    ray.kill(handles[node_id], no_restart=True)
    (report,) = collect(ray, handles, timeout_s=2.0)
    assert not report.ok and report.sample is None and report.hostname is None
