"""`fairgpu share` and the /metrics gauges read the same figures (quota.report).

A real loop (FakeExecutor, injected clock) on SQLite and PostgreSQL decides; its report
goes to a Publisher that has no database (so naming accounts cannot open a session);
the scrape is compared with `fairgpu share --json` on the same database, before and
after a node leaves Ray. And a reclaim by an account named guarantee-lab is counted
under the reclaim's kind, not under what its message text suggests."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from fake_executor import FakeExecutor
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.cli import main
from scheduler.runtime.discovery import DiscoveredNode
from scheduler.loop.coordinator import SchedulingLoop
from scheduler.metrics.exporter import build_registry
from scheduler.loop.publish import Publisher
from scheduler.services.accounts import add_account
from scheduler.services.capacity import set_node
from scheduler.services.jobs import submit_array
from scheduler.services.settings import set_setting
from scheduler.store import session_scope

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
N1 = DiscoveredNode("n1", 2, "T4", "10.0.0.1")  # 8 slices
N2 = DiscoveredNode("n2", 4, "T4", "10.0.0.2")  # 16 slices: the only node for 16 whole-GPU slices


def make(engine, tmp_path, now):
    """A loop that publishes every cycle, as `fairgpu up` wires it."""
    registry, metrics = build_registry(lambda: publisher.view())
    publisher = Publisher(None, metrics)  # no engine: publishing must not need the database
    executor = FakeExecutor(str(tmp_path / "results"))
    loop = SchedulingLoop(engine, executor, lambda: now[0], discover=False, slices_per_gpu=4,
                          on_cycle=publisher.publish)
    loop.backoff_s = (0.0, 0.0)
    return executor, loop, registry


def gauge(registry, name: str) -> dict[str, float]:
    fams = text_string_to_metric_families(generate_latest(registry).decode())
    return {s.labels["account"]: s.value for f in fams if f.name == name for s in f.samples}


def share_json(db_url: str) -> dict[str, dict]:
    result = CliRunner().invoke(main, ["share", "--json", "--db", db_url])
    assert result.exit_code == 0, result.output
    return {r["account"]: r for r in json.loads(result.stdout)}


def add_job(engine, account: str, slices: int, at: datetime) -> int:
    with session_scope(engine) as s:
        return submit_array(s, count=1, account=account, model="hold", framework=None, mode="train",
                            slices=slices, spec={"seconds": 60}, at=at)[0]


def test_share_and_the_entitled_gauge_agree_after_a_node_leaves(db_engine, db_url, tmp_path):
    now = [T0]
    with session_scope(db_engine) as s:
        add_account(s, "inst-a", weight=1, guaranteed=2)
        add_account(s, "a-x", weight=1, parent="inst-a")
        add_account(s, "a-y", weight=1, parent="inst-a")
        add_account(s, "guarantee-lab", weight=3)
    executor, loop, registry = make(db_engine, tmp_path, now)
    executor.nodes = [N1, N2]
    loop.nodes.refresh_capacity(now[0])
    for _ in range(3):
        add_job(db_engine, "a-x", 2, now[0])
    add_job(db_engine, "guarantee-lab", 1, now[0])
    loop.run_once()
    assert len(executor.starts) == 4
    before = gauge(registry, "fairgpu_account_entitled_slices")
    assert before == {a: r["entitled_slices"] for a, r in share_json(db_url).items()}
    add_job(db_engine, "guarantee-lab", 16, now[0])  # accepted: it fits n2 alone
    assert share_json(db_url)["guarantee-lab"]["entitled_slices"] == 17  # 1 running + 16 asked, of 24

    executor.nodes = [N1]  # n2 leaves Ray before a cycle: 8 slices left, and the 16-slice job fits no node
    now[0] += timedelta(seconds=5)
    loop.nodes.refresh_capacity(now[0])
    loop.run_once()
    after = gauge(registry, "fairgpu_account_entitled_slices")
    rows = share_json(db_url)
    assert after == {a: r["entitled_slices"] for a, r in rows.items()}
    # running: a-x 6 slices, the lab 1; the lab's 16 can no longer run, so it is no demand
    assert after == pytest.approx({"inst-a": 6.0, "a-x": 6.0, "a-y": 0.0, "guarantee-lab": 1.0})
    assert rows["guarantee-lab"]["pending_jobs"] == 1 and rows["inst-a"]["allocated_slices"] == 6
    pending = text_string_to_metric_families(generate_latest(registry).decode())
    infeasible = {s.labels["account"]: s.value for f in pending if f.name == "fairgpu_account_pending_jobs"
                  for s in f.samples if s.labels["reason"] == "Infeasible"}
    assert infeasible["guarantee-lab"] == 1


def test_a_reclaim_is_counted_by_its_kind_and_named_without_the_database(db_engine, tmp_path):
    now = [T0]
    with session_scope(db_engine) as s:
        set_node(s, node="n1", gpus=1, slices_per_gpu=4, gpu_type="T4", at=T0)
        add_account(s, "guarantee-lab", weight=1)
        add_account(s, "other", weight=1)
        set_setting(s, "reclaim", "entitlement")
    executor, loop, registry = make(db_engine, tmp_path, now)
    for _ in range(4):
        add_job(db_engine, "other", 1, now[0])
    loop.run_once()
    assert len(executor.starts) == 4
    for _ in range(2):
        add_job(db_engine, "guarantee-lab", 1, now[0])
    now[0] += timedelta(seconds=5)
    report = loop.run_once()
    assert report.preempted == 2 and {k for _, k in report.preemptions} == {"reclaim_fair_share"}
    assert "guarantee-lab is below its fair share" in report.decision.preemptions[0].reason
    fams = text_string_to_metric_families(generate_latest(registry).decode())
    counted = {(s.labels["account"], s.labels["reason"]): s.value for f in fams
               if f.name == "fairgpu_account_preemptions" for s in f.samples if s.name.endswith("_total")}
    assert counted[("other", "reclaim_fair_share")] == 2
    assert counted[("other", "reclaim_guarantee")] == 0  # what parsing the message said
    assert sum(v for (a, _), v in counted.items() if a == "guarantee-lab") == 0
