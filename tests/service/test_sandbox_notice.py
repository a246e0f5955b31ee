"""What holds script jobs, said at every start, and the --unsandboxed-scripts choice carried
through: `fairgpu up` prints this host's sandbox (and, loudly, the flag), a cluster's nodes
are said once each as they are first probed, the executor puts the choice into every
payload, and the API's gate follows the nodes' probes (services.script_gate)."""
from __future__ import annotations

import signal
import socket
from dataclasses import dataclass, field

import pytest

from scheduler.runtime import sandbox
from scheduler.runtime.discovery import NodeSandbox
from scheduler.runtime.executor import RayExecutor
from scheduler.server import Embedded
from scheduler.runtime.tasks import TaskPayload
from scheduler.vocab import SCRIPT
from service_helpers import Up

BOXED = "bubblewrap sandbox; host memory and process limits by rlimit"
NO_BOX = "no sandbox: bwrap cannot create namespaces here (Operation not permitted)"


@dataclass
class FakeRay:
    """The few calls RayExecutor makes for discovery and start, over plain data: `facts`
    is what each Ray node's probe answers ({ray id: node_facts() dict, or None: it fails})."""

    facts: dict[str, dict | None]
    probes: list[str] = field(default_factory=list)  # ray ids probed, in order
    started: list = field(default_factory=list)  # payloads handed over

    def nodes(self) -> list[dict]:
        return [{"NodeID": rid, "Alive": True, "NodeManagerHostname": f"gpu-{rid[0]}",
                 "NodeManagerAddress": "10.0.0.1", "Resources": {"GPU": 1.0, "accelerator_type:T4": 1.0}}
                for rid in self.facts]

    def remote(self, **_options):
        return lambda fn: _Remote(self, fn.__name__)

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs), []

    def get(self, ref, timeout=None):
        answer = self.facts[ref]
        if answer is None:
            raise RuntimeError("its worker could not start")
        return answer


@dataclass
class _Remote:
    ray: FakeRay
    name: str
    node: str = ""

    def options(self, scheduling_strategy=None, **_options):
        return _Remote(self.ray, self.name, getattr(scheduling_strategy, "node_id", self.node))

    def remote(self, *args):
        if self.name == "node_facts":
            self.ray.probes.append(self.node)
            return self.node  # the ref: FakeRay.get answers by node
        self.ray.started.extend(args)
        return object()


def facts(ok: bool, line: str) -> dict:
    return {"frameworks": ["pytorch"], "sandbox": [ok, line]}


A, B, C = "a" * 56, "b" * 56, "c" * 56


def test_each_node_is_probed_and_said_once_and_every_payload_carries_the_choice(tmp_path):
    ray = FakeRay({A: facts(True, BOXED), B: facts(False, NO_BOX)})
    seen = []
    ex = RayExecutor(ray, str(tmp_path), allow_unsandboxed=True, on_new_node=seen.append)
    found = {d.name: d for d in ex.discover()}
    assert found["gpu-a"].sandbox == NodeSandbox(True, BOXED) and found["gpu-b"].sandbox == NodeSandbox(False, NO_BOX)
    assert found["gpu-a"].frameworks == ("pytorch",)
    ray.facts[C] = None  # a node joins whose probe fails
    ex.discover()
    assert ray.probes == [A, B, C]  # once per node, however often discovery runs
    assert [d.name for d in seen] == ["gpu-a", "gpu-b", "gpu-c"] and seen[2].sandbox is None
    assert ex.node_sandboxes() == {"gpu-a": NodeSandbox(True, BOXED), "gpu-b": NodeSandbox(False, NO_BOX),
                                   "gpu-c": None}

    ex.start(TaskPayload(job_id=7, attempt=1, model=SCRIPT, num_gpus=0.25, command=("python", "x.py")), node="gpu-b")
    (payload,) = ray.started
    assert payload.allow_unsandboxed is True and payload.results_dir == str(tmp_path)
    plain = RayExecutor(ray, str(tmp_path))
    plain.discover()
    plain.start(TaskPayload(job_id=8, attempt=1, model=SCRIPT, num_gpus=0.25, command=("true",)), node="gpu-a")
    assert ray.started[-1].allow_unsandboxed is False  # the default: no unconfined scripts


@pytest.mark.parametrize("nodes,allowed,refused", [
    ({}, False, None),  # no node has answered yet: the tasks decide
    ({"gpu-a": NodeSandbox(False, NO_BOX), "gpu-b": None}, False,
     "node gpu-a: bwrap cannot create namespaces here (Operation not permitted)"),
    ({"gpu-a": NodeSandbox(False, NO_BOX), "gpu-b": NodeSandbox(False, NO_BOX)}, False,
     "node gpu-a: bwrap cannot create namespaces here (Operation not permitted), and 1 more node(s) alike"),
    ({"gpu-a": NodeSandbox(False, NO_BOX), "gpu-b": NodeSandbox(True, BOXED)}, False, None),
    ({"gpu-a": NodeSandbox(False, NO_BOX)}, True, None),
], ids=["none yet", "one without", "all without", "one with", "accepted"])
def test_on_a_cluster_scripts_are_refused_once_no_probed_node_has_a_sandbox(tmp_path, nodes, allowed, refused):
    class Nodes:
        def node_sandboxes(self):
            return nodes

    server = Embedded(state_dir=tmp_path, ray_address="ray://head:10001", unsandboxed_scripts=allowed)
    server.executor = Nodes()
    status = server.sandbox_status()
    assert status.unsandboxed_allowed is allowed
    why = status.refusal()
    if refused is None:
        assert why is None
    else:
        assert why == (f"no sandbox can start on this server's nodes ({refused}); script jobs are refused unless "
                       "the server runs with --unsandboxed-scripts")


def test_with_a_local_ray_the_gate_is_this_hosts_probe(tmp_path):
    found = sandbox.probe()
    status = Embedded(state_dir=tmp_path).sandbox_status()
    assert (status.available, status.why, status.unsandboxed_allowed) == (found.ok, found.why, False)


def test_a_local_rays_node_is_said_once_at_start_not_again_when_probed(tmp_path):
    said = []
    local = Embedded(state_dir=tmp_path, say=said.append)
    local.say_sandbox()
    local._node_seen(_node("gpu-a", NodeSandbox(True, BOXED)))
    assert said == [f"scripts on node {socket.gethostname()}: {sandbox.mechanism()}"]
    said.clear()
    cluster = Embedded(state_dir=tmp_path, ray_address="ray://head:10001", unsandboxed_scripts=True, say=said.append)
    cluster.say_sandbox()
    cluster._node_seen(_node("gpu-a", NodeSandbox(False, NO_BOX)))
    cluster._node_seen(_node("gpu-b", None))
    assert said == ["WARNING: --unsandboxed-scripts: script jobs on nodes without a sandbox run unconfined, "
                    "with the server's user's rights",
                    f"scripts on node gpu-a: {NO_BOX}", "scripts on node gpu-b: unknown (its probe failed)"]


def _node(name, box):
    from scheduler.runtime.discovery import DiscoveredNode

    return DiscoveredNode(name, 1, "T4", "10.0.0.1", ray_id=name, sandbox=box)


@pytest.mark.slow
def test_up_says_what_holds_scripts_and_the_unsandboxed_choice_at_every_start(tmp_path):
    db = f"sqlite:///{tmp_path / 'fg.db'}"
    here = f"scripts on node {socket.gethostname()}: {sandbox.mechanism()}"
    for flag in (("--unsandboxed-scripts",), ()):
        up = Up(db, tmp_path / "state", *flag)
        try:
            up.wait_up()
        finally:
            up.signal(signal.SIGTERM)
        assert up.wait_exit() == 0, up.output()
        lines = up.lines[:next(i for i, line in enumerate(up.lines) if "fairgpu is up" in line)]
        assert here in lines, up.output()
        warned = [line for line in lines if "--unsandboxed-scripts" in line]
        assert warned == (["WARNING: --unsandboxed-scripts: script jobs on nodes without a sandbox run unconfined, "
                           "with the server's user's rights"] if flag else []), up.output()
