"""A real scheduling loop with an injected fault: /healthz turns 503 after FAILING_AFTER
failed cycles and /metrics counts them; one good cycle makes both healthy again."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "loop"))

from loop_world import break_policy, make_world  # noqa: E402

from scheduler.api import create_app, metrics_route  # noqa: E402
from scheduler.api.app import FAILING_AFTER  # noqa: E402
from scheduler.metrics.exporter import build_registry  # noqa: E402


def loop_series(client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("fairgpu_schedule_") and "cycle_duration" not in s.name}


def test_a_loop_that_keeps_failing_shows_on_healthz_and_metrics(tmp_path, monkeypatch):
    broken = [True]
    break_policy(monkeypatch, lambda n: ValueError("weight of uni-x is not finite") if broken[0] else None)
    w = make_world(tmp_path)
    registry, _ = build_registry(lambda: None, health=w.loop.health)
    app = create_app(w.engine, clock=lambda: w.now[0], health=w.loop.health, extra_routes=[metrics_route(registry)])
    w.submit()
    with TestClient(app) as client:
        for n in range(1, FAILING_AFTER + 1):
            with pytest.raises(ValueError):
                w.loop.run_once()
            r = client.get("/healthz")
            assert r.status_code == (503 if n >= FAILING_AFTER else 200), (n, r.json())
        body = r.json()
        assert body["status"] == "failing" and body["consecutive_failures"] == FAILING_AFTER
        assert body["last_error"] == "ValueError" and body["failing_since"]  # the kind only: no account names
        series = loop_series(client)
        assert series["fairgpu_schedule_cycle_failures_total"] == FAILING_AFTER
        assert series["fairgpu_schedule_consecutive_failures"] == FAILING_AFTER

        broken[0] = False
        w.loop.run_once()
        r = client.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["consecutive_failures"] == 0
        series = loop_series(client)
        assert series["fairgpu_schedule_cycle_failures_total"] == FAILING_AFTER  # a counter never goes back
        assert series["fairgpu_schedule_consecutive_failures"] == 0
        assert series["fairgpu_schedule_last_success_timestamp_seconds"] == w.now[0].timestamp()


def test_the_one_health_protocol_is_what_the_loop_returns():
    """/healthz and /metrics read the loop's health through one Protocol
    (metrics.exporter.LoopHealthLike); every field it names is the loop's."""
    from dataclasses import fields

    from scheduler.loop.report import LoopHealth
    from scheduler.metrics.exporter import LoopHealthLike

    assert set(LoopHealthLike.__annotations__) <= {f.name for f in fields(LoopHealth)}
