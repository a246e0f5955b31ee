"""Two GPU nodes in a real multi-node Ray (ray.cluster_utils.Cluster): capacity follows
nodes that join and leave, and a node removed mid-job requeues the job (and past the
retry limit fails it with the reason)."""
from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from scheduler.runtime.jobfiles import started_path
from scheduler.server import Embedded
from scheduler.services.capacity import list_nodes
from scheduler.store import session_scope
from service_helpers import account, jobs, submit, wait_for

FAST_HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
               "health_check_failure_threshold": 4}


def gpu_node(cluster: Cluster):
    return cluster.add_node(num_cpus=1, num_gpus=1, resources={"accelerator_type:T4": 1})


def runs_on(server, job: dict, node) -> bool:
    """Nodes are named by host (these share one: scheduler.runtime.discovery tells them apart);
    the capacity list keeps each one's Ray id."""
    with session_scope(server.engine, readonly=True) as s:
        ray_ids = {n["node"]: n["ray_id"] for n in list_nodes(s)}
    return ray_ids.get(job["node"]) == node.node_id


@pytest.mark.slow
def test_node_leaving_mid_job_requeues_then_fails_past_the_retry_limit(tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                            "_system_config": FAST_HEALTH})
    nodes = [gpu_node(cluster), gpu_node(cluster)]
    cluster.wait_for_nodes()
    server = Embedded(db_url=f"sqlite:///{tmp_path / 'fg.db'}", state_dir=tmp_path, ray_address=cluster.address,
                      port=0, retry_limit=2, period_s=0.5)
    try:
        server.start_background()
        wait_for(lambda: (v := server.publisher.view()) and v.capacity_slices == 8, what="8 slices from 2 nodes")
        client = account(server, "lab")
        [job_id] = submit(client, slices=4, seconds=120)  # a whole GPU

        def running(after: int = 0):
            """The job, once an attempt later than `after` runs in Ray (its start marker is there).
            (An attempt Ray refuses to place, on a node it just lost, is not one.)"""
            j = jobs(client)[job_id]
            ok = (j["state"] == "RUNNING" and j["attempts"] > after
                  and started_path(tmp_path / "results", job_id, j["attempts"]).exists())
            return j if ok else None

        first = wait_for(running, what="the job's task to start")
        victim = next(n for n in nodes if runs_on(server, first, n))
        cluster.remove_node(victim, allow_graceful=False)
        nodes.remove(victim)
        second = wait_for(lambda: running(first["attempts"]), timeout=120, what="the job to run again on the other node",
                          show=lambda: (client.get(f"/v1/jobs/{job_id}/logs").text[-2500:],
                                        sorted(p.name for p in (tmp_path / "results").rglob("*"))))
        assert second["node"] != first["node"]
        log = client.get(f"/v1/jobs/{job_id}/logs").text
        assert "lost its worker or node" in log, log[-3000:]
        wait_for(lambda: server.publisher.view().capacity_slices == 4, what="capacity to shrink", timeout=60)
        [survivor] = nodes  # the only GPU node left: the job runs there
        nodes.append(gpu_node(cluster))  # a node joins: capacity grows back
        wait_for(lambda: server.publisher.view().capacity_slices == 8, what="capacity to grow", timeout=60)
        cluster.remove_node(survivor, allow_graceful=False)
        failed = wait_for(lambda: (j := jobs(client)[job_id])["state"] == "FAILED" and j, timeout=120,
                          what="the job to fail past the retry limit", show=lambda: jobs(client)[job_id])
        assert "gave up after 2 " in failed["error"], failed
    finally:
        server.stop()
        cluster.shutdown()
