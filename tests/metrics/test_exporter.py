"""The exporter: values come from the view at scrape time, names and labels follow the conventions."""
from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics_fixtures import contended_view
from scheduler.metrics.exporter import PREEMPTION_REASONS, build_registry, render
from scheduler.metrics.view import PENDING_REASONS, ClusterView, GpuView
from scheduler.vocab import PHASES


def scrape(registry) -> dict[str, list]:
    """{family name: [(labels, value, sample name)]}."""
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        out[fam.name] = [(s.labels, s.value, s.name) for s in fam.samples]
    return out


def value(families, name, **labels):
    hits = [v for lab, v, _ in families[name] if all(lab.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, families.get(name))
    return hits[0]


def test_gauges_follow_the_latest_view_at_scrape_time():
    views = [contended_view(1000.0, {"inst-a": 1, "inst-b": 3, "inst-c": 4})]
    registry, _ = build_registry(lambda: views[-1])
    first = scrape(registry)
    assert value(first, "fairgpu_free_slices") == 0
    assert value(first, "fairgpu_slice_utilisation_ratio") == 1.0
    assert value(first, "fairgpu_account_allocated_slices", account="inst-b") == 3
    views.append(contended_view(2000.0, {"inst-a": 2, "inst-b": 0, "inst-c": 2}))
    second = scrape(registry)
    assert value(second, "fairgpu_free_slices") == 4
    assert value(second, "fairgpu_slice_utilisation_ratio") == 0.5
    assert value(second, "fairgpu_account_allocated_slices", account="inst-b") == 0
    assert value(second, "fairgpu_last_cycle_timestamp_seconds") == 2000.0


def test_every_account_figure_and_reason_is_exported():
    view = contended_view(1.0)
    fams = scrape(build_registry(lambda: view)[0])
    for a in view.accounts:
        assert value(fams, "fairgpu_account_entitled_slices", account=a.name) == pytest.approx(a.entitled_slices)
        assert value(fams, "fairgpu_account_weight", account=a.name) == a.weight
        assert value(fams, "fairgpu_account_fairshare_ratio", account=a.name) == pytest.approx(a.fairshare_factor)
        assert value(fams, "fairgpu_account_info", account=a.name, parent="") == 1
        for reason in PENDING_REASONS:  # all five, zero where none wait for that reason
            assert value(fams, "fairgpu_account_pending_jobs", account=a.name, reason=reason) == \
                a.pending_by_reason.get(reason, 0)
    capped = {lab["account"] for lab, _, _ in fams["fairgpu_account_max_slices"]}
    assert capped == {a.name for a in view.accounts if a.max_slices is not None}  # uncapped: absent


def test_gpu_series_carry_dcgm_labels_and_skip_unsupported_figures():
    base = contended_view(1.0)
    gpus = base.gpus + (GpuView("gpu-node-1", 2, "GPU-mig", "A100", None, 1, 2, None),)
    view = ClusterView(**{**base.__dict__, "gpus": gpus})
    fams = scrape(build_registry(lambda: view)[0])
    labels, v, _ = fams["fairgpu_gpu_memory_used_bytes"][1]
    assert labels == {"gpu": "1", "UUID": "GPU-0000-1", "model_name": "Tesla T4", "hostname": "gpu-node-1"}
    assert v == gpus[1].memory_used_bytes
    assert len(fams["fairgpu_gpu_memory_total_bytes"]) == 3
    assert len(fams["fairgpu_gpu_power_watts"]) == 2  # None is absent, never 0
    assert len(fams["fairgpu_gpu_utilisation_ratio"]) == 2
    nodes = {lab["hostname"]: v for lab, v, _ in fams["fairgpu_node_nvml_available"]}
    assert nodes == {"gpu-node-1": 1.0, "cpu-node-2": 0.0}


def test_no_view_yet_exports_only_the_loops_metrics():
    registry, m = build_registry(lambda: None)
    m.observe_cycle(0.02)
    fams = scrape(registry)
    assert not any(name.startswith(("fairgpu_account_allocated", "fairgpu_capacity")) for name in fams)
    assert value(fams, "fairgpu_schedule_cycle_duration_seconds", le="0.025") == 1


def test_cycle_phases_add_up_per_phase_and_ignore_unknown_ones():
    registry, m = build_registry(lambda: None)
    fams = scrape(registry)
    assert value(fams, "fairgpu_schedule_cycle_phase_seconds", phase="decide") == 0  # present before any cycle
    m.observe_cycle(0.02, {"settle": 0.004, "decide": 0.001, "start": 0.003})
    m.observe_cycle(0.01, {"settle": 0.002, "bogus": 5.0})
    fams = scrape(registry)
    assert value(fams, "fairgpu_schedule_cycle_phase_seconds", phase="settle") == pytest.approx(0.006)
    assert value(fams, "fairgpu_schedule_cycle_phase_seconds", phase="start") == pytest.approx(0.003)
    assert {lab["phase"] for lab, _v, n in fams["fairgpu_schedule_cycle_phase_seconds"]
            if n.endswith("_total")} == set(PHASES)


def test_loop_metrics_count_events_with_bounded_labels():
    registry, m = build_registry(lambda: None)
    m.ensure_account("a")
    m.admitted("a", queue_wait_s=7.0)
    m.admitted("a", queue_wait_s=-1.0)  # a clock step never gives a negative wait
    m.preempted("a", "reclaim_guarantee")
    m.job_finished("a", "SUCCEEDED")
    m.add_usage("a", 12.5)
    with pytest.raises(ValueError):
        m.job_finished("a", "RUNNING")
    with pytest.raises(ValueError):  # a kind the policy does not make has no label
        m.preempted("a", "node_lost")
    fams = scrape(registry)
    assert value(fams, "fairgpu_account_admissions", account="a") == 2
    assert value(fams, "fairgpu_account_queue_wait_seconds", account="a", le="0.1") == 1
    assert value(fams, "fairgpu_account_queue_wait_seconds", account="a", le="10.0") == 2
    assert value(fams, "fairgpu_account_preemptions", account="a", reason="reclaim_guarantee") == 1
    assert value(fams, "fairgpu_account_preemptions", account="a", reason="reclaim_fair_share") == 0  # ensure_account
    assert value(fams, "fairgpu_account_finished_jobs", account="a", status="succeeded") == 1
    assert value(fams, "fairgpu_account_usage_slice_seconds", account="a") == 12.5
    reasons = {lab["reason"] for lab, _, n in fams["fairgpu_account_preemptions"] if n.endswith("_total")}
    assert reasons == set(PREEMPTION_REASONS)


def test_a_preemption_is_labelled_by_its_kind_never_by_its_message():
    registry, m = build_registry(lambda: None)
    m.ensure_account("a")
    with pytest.raises(ValueError):
        m.preempted("a", "reclaim: guarantee-lab is below its guarantee of 4 slices")
    fams = scrape(registry)
    assert sum(v for lab, v, n in fams["fairgpu_account_preemptions"] if n.endswith("_total")) == 0


def test_registries_are_independent_and_the_global_one_is_untouched():
    r1, m1 = build_registry(lambda: None)
    r2, _ = build_registry(lambda: None)
    m1.admitted("x", 1.0)
    assert scrape(r1)["fairgpu_account_admissions"] and not scrape(r2)["fairgpu_account_admissions"]
    assert not any(n.startswith("fairgpu_") for n in scrape(REGISTRY))


def test_no_series_has_a_per_job_label(contended_run):
    fams = scrape(contended_run.registry)
    labels = {k for samples in fams.values() for lab, _, _ in samples for k in lab}
    assert labels <= {"account", "parent", "reason", "status", "le", "gpu", "UUID", "model_name", "hostname",
                      "model", "framework", "device", "phase"}


def test_promtool_finds_nothing_to_lint_in_a_contended_scrape(promtool, contended_run):
    body, content_type = render(contended_run.registry)
    assert content_type.startswith("text/plain")
    assert b"fairgpu_gpu_power_watts{" in body and b"fairgpu_account_queue_wait_seconds_bucket{" in body
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert (out.returncode, out.stdout + out.stderr) == (0, b"")


def test_promtool_does_flag_a_bad_name(promtool):
    """The lint above is live: a counter without _total and a camelCase label are reported."""
    bad = b'# HELP x_requests n\n# TYPE x_requests counter\nx_requests{modelName="T4"} 1\n'
    out = subprocess.run([promtool, "check", "metrics"], input=bad, capture_output=True, timeout=30)
    assert out.returncode != 0 and b"_total" in out.stdout + out.stderr


def test_view_and_metrics_package_import_without_prometheus_client_ray_or_pynvml():
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import scheduler.metrics, scheduler.metrics.view, scheduler.metrics.nvml, scheduler.metrics.sampler\n"
            "bad = [m for m in ('ray', 'pynvml', 'grafana_foundation_sdk') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_loop_failures_are_read_from_the_loops_health_at_scrape_time(promtool):
    from datetime import datetime, timezone

    from scheduler.loop.report import LoopHealth

    state = [LoopHealth()]
    registry, _ = build_registry(lambda: None, health=lambda: state[-1])
    fams = scrape(registry)
    assert value(fams, "fairgpu_schedule_cycle_failures") == 0  # present from the start
    assert value(fams, "fairgpu_schedule_consecutive_failures") == 0
    assert fams["fairgpu_schedule_last_success_timestamp_seconds"] == []  # before the first success
    ok = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    state.append(LoopHealth(consecutive_failures=4, failures_total=9, last_error="boom", last_success_at=ok,
                            failing_since=ok))
    fams = scrape(registry)
    assert value(fams, "fairgpu_schedule_cycle_failures") == 9
    assert value(fams, "fairgpu_schedule_consecutive_failures") == 4
    assert value(fams, "fairgpu_schedule_last_success_timestamp_seconds") == ok.timestamp()
    body, _ = render(registry)
    assert b"fairgpu_schedule_cycle_failures_total 9.0" in body and b"boom" not in body
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert (out.returncode, out.stdout + out.stderr) == (0, b"")


def test_a_failing_health_source_does_not_fail_the_scrape():
    def broken():
        raise RuntimeError("no loop yet")

    fams = scrape(build_registry(lambda: None, health=broken)[0])
    assert value(fams, "fairgpu_schedule_cycle_failures") == 0


def test_cluster_only_render_leaves_out_every_account_series_and_nothing_else(contended_run, promtool):
    full = scrape(contended_run.registry)
    public = {f.name: f for f in text_string_to_metric_families(render(contended_run.registry, per_account=False)[0]
                                                                   .decode())}
    with_account = {n for n, samples in full.items() if any("account" in lab for lab, _, _ in samples)}
    assert with_account and all(n.startswith("fairgpu_account_") for n in with_account)  # the naming rule holds
    assert set(public) == {n for n in full if not n.startswith("fairgpu_account_")}
    assert "fairgpu_capacity_slices" in public and "fairgpu_gpu_memory_used_bytes" in public
    body, _ = render(contended_run.registry, per_account=False)
    out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert (out.returncode, out.stdout + out.stderr) == (0, b"")
