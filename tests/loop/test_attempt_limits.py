"""Each attempt's payload carries the attempt-limit settings as the loop loaded them
(host_memory_per_slice, max_processes) and its node's slices: real SQLite, a FakeExecutor."""
from __future__ import annotations

from loop_world import make_world

from scheduler.services.capacity import set_node
from scheduler.services.settings import set_setting
from scheduler.store import session_scope


def _payloads(w) -> dict:
    return {s["job_id"]: (s["node"], s["payload"]) for s in w.executor.starts}


def test_payloads_carry_the_settings_and_their_nodes_slices(tmp_path):
    w = make_world(tmp_path)
    with session_scope(w.engine) as s:
        set_node(s, node="n2", gpus=2, slices_per_gpu=4, gpu_type="T4", at=w.now[0])
    first = w.submit(slices=1)
    w.loop.run_once()
    node, p = _payloads(w)[first]
    assert (p.host_memory_per_slice, p.max_processes) == (None, 4096)  # the defaults: node memory / its slices
    assert p.node_slices == {"n1": 4, "n2": 8}[node]

    with session_scope(w.engine) as s:
        set_setting(s, "host_memory_per_slice", "1.5GiB")
        set_setting(s, "max_processes", "64")
    big, small = w.submit(slices=8), w.submit(slices=1)  # 8 slices fit n2 alone
    w.loop.run_once()
    payloads = _payloads(w)
    assert payloads[big][0] == "n2" and payloads[big][1].node_slices == 8
    for job_id in (big, small):
        node, p = payloads[job_id]
        assert (p.host_memory_per_slice, p.max_processes) == (3 << 29, 64)
        assert p.node_slices == {"n1": 4, "n2": 8}[node] and p.slices == w.job(job_id).slices

    with session_scope(w.engine) as s:
        set_setting(s, "host_memory_per_slice", "node")
    w.executor.finish(small)
    w.loop.run_once()
    again = w.submit(slices=1)
    w.loop.run_once()
    assert _payloads(w)[again][1].host_memory_per_slice is None
