"""GPU capacity as Ray has it: which nodes, how many GPUs of which type, what they can run.

Invariants:
- A node is named by its host (Ray's `NodeManagerHostname`, else its node name or
  address), so people can read the tables; a second Ray node on a host whose name is
  taken (test clusters) gets the host plus the start of its Ray id. A name, once given
  to a Ray node, stays its name while it lives (`known`), so a node joining never
  renames one that runs jobs. The Ray id stays an attribute: placement uses it.
- Each node is probed once per Ray node id, by a zero-resource task pinned to it
  (`node_facts`): which framework modules its workers can find (`importlib.util.find_spec`,
  nothing imported), and whether a script sandbox starts there (`scheduler.runtime.sandbox.probe`,
  said in one line: `NodeSandbox`). A node whose probe fails or times out has
  `frameworks=None` and `sandbox=None` (unknown).
- Ray is passed in; nothing here touches the database.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("fairgpu.discovery")

GPU_TYPE_PREFIX = "accelerator_type:"
FRAMEWORK_MODULES = (("pytorch", "torch"), ("tensorflow", "tensorflow"))


@dataclass(frozen=True)
class NodeSandbox:
    """What holds script jobs on a node: `scheduler.runtime.sandbox.mechanism()` there."""

    ok: bool  # a sandbox starts there
    describe: str  # one line: "bubblewrap sandbox; ..." or "no sandbox: <why>"


@dataclass(frozen=True)
class DiscoveredNode:
    name: str  # the host's name (see the module docstring)
    gpus: int
    gpu_type: str
    address: str
    ray_id: str = ""
    frameworks: tuple[str, ...] | None = None  # None: not known
    sandbox: NodeSandbox | None = None  # None: not known


def importable_frameworks() -> list[str]:
    """What runs on the probed worker: the frameworks whose module it can find."""
    import importlib.util

    return [name for name, module in FRAMEWORK_MODULES if importlib.util.find_spec(module) is not None]


def node_facts() -> dict:
    """What runs on the probed worker: its frameworks, and its sandbox as plain data
    ({"frameworks": [...], "sandbox": [ok, one line] or None})."""
    try:
        from scheduler.runtime import sandbox

        found = sandbox.probe()
        box = [found.ok, found.describe()]
    except Exception as exc:  # the probe never raises; an import that fails here leaves it unknown
        log.warning("could not probe the script sandbox here: %s", exc)
        box = None
    return {"frameworks": importable_frameworks(), "sandbox": box}


def _host(n: dict) -> str:
    return n.get("NodeManagerHostname") or n.get("NodeName") or n.get("NodeManagerAddress") or n["NodeID"][:12]


def gpu_nodes(ray_nodes: list[dict], default_gpu_type: str = "T4",
              known: dict[str, str] | None = None) -> list[DiscoveredNode]:
    """The alive nodes with GPUs, named by host (frameworks not probed yet). `known`:
    {Ray id: name} given earlier; those names are kept."""
    known = known or {}
    alive = sorted((n for n in ray_nodes if n.get("Alive") and int(n.get("Resources", {}).get("GPU", 0)) > 0),
                   key=lambda n: (n["NodeID"] not in known, n["NodeID"]))
    taken: set[str] = set()
    out = []
    for n in alive:
        res = n.get("Resources", {})
        types = [k[len(GPU_TYPE_PREFIX):] for k in res if k.startswith(GPU_TYPE_PREFIX)]
        name = known.get(n["NodeID"]) or _host(n)
        if name in taken:
            name = f"{_host(n)}-{n['NodeID'][:8]}"
        taken.add(name)
        out.append(DiscoveredNode(name, int(res["GPU"]), types[0] if types else default_gpu_type,
                                  n.get("NodeManagerAddress", ""), n["NodeID"]))
    return sorted(out, key=lambda d: d.name)


@dataclass(frozen=True)
class Probed:
    """One node's probe: None where it failed or timed out."""

    frameworks: tuple[str, ...] | None = None
    sandbox: NodeSandbox | None = None


def probe_nodes(ray, ray_ids: list[str], timeout: float = 60.0) -> dict[str, Probed]:
    """{ray id: what its workers can import, and its sandbox} (`Probed()` where the probe failed)."""
    if not ray_ids:
        return {}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    fn = ray.remote(num_cpus=0, num_gpus=0, max_retries=0)(node_facts)
    refs = {rid: fn.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=rid, soft=False)).remote()
            for rid in ray_ids}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    ready = set(ready)
    out: dict[str, Probed] = {}
    for rid, ref in refs.items():
        try:
            facts = ray.get(ref, timeout=1) if ref in ready else None
        except Exception as exc:  # the node went, or its worker could not start
            log.warning("could not probe node %s: %s", rid[:12], exc)
            facts = None
        out[rid] = _probed(facts)
    return out


def _probed(facts: dict | None) -> Probed:
    if facts is None:
        return Probed()
    box = facts.get("sandbox")
    return Probed(tuple(facts["frameworks"]), NodeSandbox(bool(box[0]), str(box[1])) if box else None)
