"""A plain Ray cluster without Kubernetes, as docs/deploy.md describes it: a head and a
worker started as separate `ray start` processes on this machine (2 logical GPUs each,
typed by `--resources '{"accelerator_type:T": 1}'`), Ray's token authentication on, and
`fairgpu up --ray-address` in its own process.

- a worker that joins without the head's token, or with another token, is refused;
  so is a `fairgpu up --ray-address` without it: one line, exit 1, nothing served;
- fairgpu sees both nodes, tells apart the two that share this host, and reads each
  one's GPU type from its resources;
- jobs of two institutions run on both nodes and all succeed; the server stops cleanly.

The nodes are always stopped by killing their own process groups (never `ray stop`,
which would end every Ray of the user on the machine)."""
from __future__ import annotations

import secrets
import signal
import socket

import pytest
from ray_nodes import RayNode, UpOnCluster, ray_env
from service_helpers import admin_client, institution, submit, wait_for, wait_states

pytestmark = pytest.mark.slow

REFUSED = "Authentication token is missing or incorrect"


def test_two_ray_start_nodes_with_a_token_run_jobs_of_two_institutions_on_both(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = ray_env(home, secrets.token_hex(32))
    nodes: list[RayNode] = []
    up = stray = None
    try:
        patient = {"RAY_gcs_server_port_wait_time_s": "90"}  # --port 0: the GCS's port file, on a busy machine
        head = RayNode({**env, **patient}, gpus=2, resources='{"accelerator_type:T4": 1}')
        nodes.append(head)
        assert head.wait() == 0, head.output[-3000:]
        # no Ray Client server, so no port that another process could take before it binds
        assert not list(head.temp_dir.glob("session_latest/logs/ray_client_server*")), head.cmd
        # the rest starts at once: fairgpu takes capacity from Ray as nodes join
        worker = RayNode(env, gpus=2, resources='{"accelerator_type:L4": 1}', address=head.address)
        nodes.append(worker)
        quick = {"RAY_gcs_server_port_wait_time_s": "2"}  # a refused node gives up after 2 tries, not 20
        intruders = []
        for token in (None, secrets.token_hex(32)):  # no token at all; another cluster's
            intruders.append(RayNode(ray_env(home, token, **quick), gpus=2, address=head.address))
            nodes.append(intruders[-1])
        stray = UpOnCluster(f"sqlite:///{tmp_path / 'stray.db'}", tmp_path / "stray", head.address,
                            ray_env(home, None, **quick))
        state = tmp_path / "state"
        up = UpOnCluster(f"sqlite:///{tmp_path / 'fairgpu.db'}", state, head.address, env)
        assert worker.wait() == 0, worker.output[-3000:]
        for intruder in intruders:
            assert intruder.wait() != 0 and REFUSED in intruder.output, intruder.output[-3000:]
        assert stray.wait_exit(90) == 1, stray.output()[-3000:]
        said = [line for line in stray.output().splitlines() if line.startswith("Error:")]
        assert len(said) == 1 and "cannot join the Ray cluster at" in said[0], stray.output()[-3000:]
        assert stray.url is None  # never served
        url = up.wait_up()
        admin = admin_client(url, state)

        def capacity():
            rows = admin.get("/v1/admin/capacity").json()
            return rows if sum(r["active"] for r in rows) == 2 else None

        rows = wait_for(capacity, timeout=60, what="both Ray nodes in fairgpu's capacity")
        assert len(rows) == 2, rows  # the refused ones never joined
        assert {r["gpu_type"]: r["slices"] for r in rows} == {"T4": 8, "L4": 8}, rows
        names = {r["node"] for r in rows}
        assert len(names) == 2 and all(n.startswith(socket.gethostname()) for n in names), names
        assert all(r["source"] == "ray" and r["ray_id"] for r in rows), rows

        labs = {name: (institution(admin, name), []) for name in ("lab-a", "lab-b")}
        for _ in range(5):  # 10 one-GPU jobs on 4 GPUs: more than one node holds at once
            for client, ids in labs.values():
                ids += submit(client, slices=4, seconds=1.5)
        done = {}
        for client, ids in labs.values():
            done.update(wait_states(client, ids, timeout=120))
        assert {j["state"] for j in done.values()} == {"SUCCEEDED"}, {i: (j["state"], j["error"]) for i, j in done.items()}
        assert len(done) == 10 and {j["node"] for j in done.values()} == names

        up.signal(signal.SIGTERM)
        assert up.wait_exit(60) == 0, up.output()[-3000:]
    finally:
        for server in (up, stray):
            if server is not None and server.proc.poll() is None:
                server.kill()
        for node in nodes:
            node.stop()

