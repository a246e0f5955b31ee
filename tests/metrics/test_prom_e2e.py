"""End to end: a real Prometheus scrapes a /metrics endpoint under contended load, and every
dashboard query (Grafana variables substituted) parses and returns data.

The target is the `scrape_target` fixture (tests/metrics/conftest.py): by default the real
embedded fairgpu server of `real_run` (local Ray, SQLite, the real loop; 3 institutions
weighted 1:2:3 flooding 8 slices, a late institution whose guarantee preempts, a conv6
PyTorch job), or a running `fairgpu up` via FAIRGPU_E2E_TARGET=host:port. Only the
tests about what the real run did (a reclaim) need `real_run`; they skip otherwise.
"""
from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from prom_harness import Prometheus, PromQLError, substitute
from scheduler.metrics.dashboards import INSTITUTIONS_QUERY, load, panel_queries

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"


def min_scrapes() -> int:
    """Scrapes to wait for: enough that every rate() window holds events of a real run.

    The synthetic run moves every series every 50 ms, so 3 scrapes do; a real server's
    accounts admit a job every second or so, so wait 20 (of a 30 s $__rate_interval).
    """
    synthetic = os.environ.get("FAIRGPU_E2E_TARGET") == "synthetic"
    return int(os.environ.get("FAIRGPU_E2E_SCRAPES") or (3 if synthetic else 20))


@pytest.fixture(scope="module")
def prom(prometheus_bin, scrape_target, scrape_token, real_run, tmp_path_factory):
    with Prometheus(prometheus_bin, scrape_target, tmp_path_factory.mktemp("prometheus"), token=scrape_token) as p:
        if real_run is not None:  # Prometheus scrapes while the run gets there
            real_run.wait_eventful(timeout_s=90)
        p.wait_for_scrapes(min_scrapes(), timeout_s=10 + 2 * min_scrapes())
        yield p


@pytest.fixture(scope="module")
def institutions(prom) -> list[str]:
    """What Grafana's INSTITUTIONS_QUERY offers for $institution (the top-level accounts)."""
    match, label = re.fullmatch(r"label_values\((.+), (\w+)\)", INSTITUTIONS_QUERY).groups()
    values = prom.label_values(label, match)
    assert values
    return values


def test_substitute_expands_grafana_variables():
    expr = 'rate(x{account=~"$institution"}[$__rate_interval]) / $__range_s + ${__range} + [[institution]]'
    assert substitute(expr, {"institution": "a|b"}) == 'rate(x{account=~"a|b"}[30s]) / 300 + 5m + a|b'
    with pytest.raises(ValueError):
        substitute("x[$unknown]")


def test_a_bad_query_is_an_error_not_empty_data(prom):
    with pytest.raises(PromQLError):
        prom.query("sum(fairgpu_free_slices")


@pytest.mark.parametrize("dashboard", ["fairness.json", "institution.json"])
def test_every_panel_query_returns_data(prom, institutions, dashboard):
    queries = panel_queries(load(DASHBOARDS / dashboard))
    assert len(queries) >= 10
    # fairness: "All" (Grafana joins the listed values as a regex) and one institution
    choices = ["|".join(institutions), institutions[0]] if dashboard == "fairness.json" else institutions
    problems = []  # every panel is checked before failing, so one run shows all gaps
    for institution in choices:
        for title, expr in queries:
            result = prom.query(substitute(expr, {"institution": institution}))
            if not result:
                problems.append(("no data", institution, title, expr))
            bad = [s["metric"] for s in result if s["value"][1] in ("NaN", "+Inf", "-Inf")]
            if bad:
                problems.append(("NaN/Inf", institution, title, expr, bad))
    assert not problems, "\n".join(map(str, problems))


def test_gpu_series_reach_prometheus_with_dcgm_labels(prom):
    series = prom.query("fairgpu_gpu_memory_total_bytes")
    assert series
    for s in series:
        labels = s["metric"]
        assert {"gpu", "UUID", "modelName", "hostname"} <= set(labels) and "model_name" not in labels


def test_scraped_figures_are_consistent(prom):
    assert prom.query("fairgpu_free_slices > fairgpu_capacity_slices") == []
    assert prom.query('{__name__=~"fairgpu_.*_ratio"} > 1 or {__name__=~"fairgpu_.*_ratio"} < 0') == []
    for metric in ("fairgpu_account_allocated_slices", "fairgpu_account_entitled_slices"):
        assert prom.query(f"{metric} > on() group_left() fairgpu_capacity_slices") == [], metric
    assert prom.query("fairgpu_gpu_memory_used_bytes > fairgpu_gpu_memory_total_bytes") == []


def test_promtool_finds_nothing_to_lint_in_a_real_scrape(prom, scrape_target, scrape_token, promtool):
    headers = {"Authorization": f"Bearer {scrape_token}"} if scrape_token else {}
    request = urllib.request.Request(f"http://{scrape_target}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        body = r.read()
    assert b"fairgpu_account_queue_wait_seconds_bucket{" in body and b"fairgpu_gpu_power_watts{" in body
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert (out.returncode, out.stdout + out.stderr) == (0, b"")


def test_the_real_runs_events_reach_prometheus(prom, real_run):
    """The flood kept going, weight 3 used more than weight 1, the late institution's guarantee
    preempted a borrower, and the conv6 run is aggregated."""
    if real_run is None:
        pytest.skip("FAIRGPU_E2E_TARGET: not our run")
    assert real_run.error is None
    used = {s["metric"]["account"]: float(s["value"][1])
            for s in prom.query("increase(fairgpu_account_usage_slice_seconds_total[30s])")}
    assert used["inst-c"] > used["inst-a"] > 0, used
    reclaims = prom.query('sum(fairgpu_account_preemptions_total{reason="reclaim_guarantee"})')
    assert reclaims and float(reclaims[0]["value"][1]) >= 1
    runs = prom.query('fairgpu_workload_runs_total{model="conv6", framework="pytorch"}')
    assert runs and float(runs[0]["value"][1]) >= 1
    assert {a["metric"]["account"] for a in prom.query('fairgpu_account_info{parent=""}')} == {
        "inst-a", "inst-b", "inst-c", "inst-late"}
    assert prom.query("fairgpu_node_nvml_available == 1")
