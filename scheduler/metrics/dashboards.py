"""Grafana dashboards as code (grafana-foundation-sdk, pinned 1769699379!11.6.0).

Invariants:
- The committed JSON under deploy/grafana/dashboards/ is exactly `render_all()`;
  tests/metrics/test_dashboards.py fails when it is stale. Rebuild with
  `python deploy/grafana/generate.py` (or `write_all(path)`).
- Output is deterministic: sorted keys, fixed uids, no timestamps.
- Every query uses only fairgpu_* series from docs/metrics.md, Grafana's
  `$__rate_interval`, and the dashboard variable `$institution`; the e2e test runs
  each one against a real Prometheus with those substituted.
- grafana_foundation_sdk is imported inside functions (it is a test/dev dependency).
"""
from __future__ import annotations

import json
from pathlib import Path

DATASOURCE_UID = "fairgpu-prometheus"  # deploy/grafana/provisioning/datasources/prometheus.yaml
INSTITUTION = 'account=~"$institution"'
RI = "$__rate_interval"
# Institutions are the top-level accounts (parent label empty); "All" is their list, so
# sub-accounts never appear in a per-institution panel.
INSTITUTIONS_QUERY = 'label_values(fairgpu_account_info{parent=""}, account)'


def _q(expr: str, legend: str = "__auto"):
    from grafana_foundation_sdk.builders import prometheus

    return prometheus.Dataquery().expr(expr).legend_format(legend)


def _ds():
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


def _series(title, unit, targets, description="", span=12, height=8, max_val=None):
    from grafana_foundation_sdk.builders import timeseries

    p = timeseries.Panel().title(title).description(description).unit(unit).span(span).height(height)
    p = p.datasource(_ds()).min(0)
    if max_val is not None:
        p = p.max(max_val)
    for i, (expr, legend) in enumerate(targets):
        p = p.with_target(_q(expr, legend).ref_id(chr(ord("A") + i)))
    return p


def _stat(title, unit, expr, legend="__auto", span=6):
    from grafana_foundation_sdk.builders import stat

    return (stat.Panel().title(title).unit(unit).span(span).height(4).datasource(_ds())
            .with_target(_q(expr, legend).ref_id("A").instant()))


def _quantiles(metric: str, selector: str, by: str):
    sel = f"{{{selector}}}" if selector else ""
    return [(f"histogram_quantile({q}, sum by ({by}le) (rate({metric}_bucket{sel}[{RI}])))",
             f"{{{{{by.rstrip(', ')}}}}} p{int(q * 100)}" if by else f"p{int(q * 100)}") for q in (0.5, 0.95)]


def _institution_var(multi: bool):
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.models.dashboard import VariableRefresh

    v = (dashboard.QueryVariable("institution").label("Institution").datasource(_ds())
         .query(INSTITUTIONS_QUERY).refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    return v.multi(True).include_all(True) if multi else v.multi(False)


def fairness_dashboard():
    from grafana_foundation_sdk.builders import dashboard

    share = "/ on() group_left() fairgpu_capacity_slices"
    d = (dashboard.Dashboard("GPU access fairness").uid("fairgpu-fairness").tags(["fairgpu"])
         .time("now-3h", "now").refresh("30s").with_variable(_institution_var(multi=True)))
    d = d.with_row(dashboard.Row("Fairness"))
    d = d.with_panel(_series("Entitled vs actual share per institution", "percentunit", [
        (f"fairgpu_account_allocated_slices{{{INSTITUTION}}} {share}", "{{account}} actual"),
        (f"fairgpu_account_entitled_slices{{{INSTITUTION}}} {share}", "{{account}} entitled"),
    ], "Allocated and entitled slices as a fraction of capacity."))
    d = d.with_panel(_series("Jain's index over time", "none", [("fairgpu_jain_index_ratio", "Jain's index")],
                             "1 is perfectly fair; 1/n is one account taking everything.", max_val=1))
    d = d.with_panel(_series("Share deviation and usage Gini", "percentunit", [
        ("fairgpu_max_share_deviation_ratio", "largest share deviation"),
        ("fairgpu_usage_gini_ratio", "Gini of usage per share")]))
    d = d.with_panel(_series("Queue wait p50 / p95 per institution", "s",
                             _quantiles("fairgpu_account_queue_wait_seconds", INSTITUTION, "account, ")))
    d = d.with_panel(_series("Pending jobs by reason", "none", [
        (f"sum by (reason) (fairgpu_account_pending_jobs{{{INSTITUTION}}})", "{{reason}}")]))
    d = d.with_panel(_series("Preemptions", "none", [
        (f"sum by (account, reason) (increase(fairgpu_account_preemptions_total{{{INSTITUTION}}}[{RI}]))",
         "{{account}} {{reason}}")], "Jobs preempted per interval, by victim account and reason."))
    d = d.with_panel(_series("Slices in use per institution", "none", [
        (f"sum by (account) (rate(fairgpu_account_usage_slice_seconds_total{{{INSTITUTION}}}[{RI}]))",
         "{{account}}")], "Slice-seconds used per second, i.e. the average slices held."))
    d = d.with_panel(_series("Admissions", "ops", [
        (f"sum by (account) (rate(fairgpu_account_admissions_total{{{INSTITUTION}}}[{RI}]))", "{{account}}")]))
    d = d.with_row(dashboard.Row("Utilisation"))
    d = d.with_panel(_series("Slice utilisation", "percentunit", [
        ("fairgpu_slice_utilisation_ratio", "allocated / capacity")], max_val=1))
    d = d.with_panel(_series("Capacity and free slices", "none", [
        ("fairgpu_capacity_slices", "capacity"), ("fairgpu_free_slices", "free")]))
    d = d.with_panel(_series("GPU utilisation per GPU", "percentunit", [
        ("fairgpu_gpu_utilisation_ratio", "{{hostname}} GPU {{gpu}}")], max_val=1))
    d = d.with_panel(_series("GPU memory per GPU", "bytes", [
        ("fairgpu_gpu_memory_used_bytes", "{{hostname}} GPU {{gpu}} used"),
        ("fairgpu_gpu_memory_total_bytes", "{{hostname}} GPU {{gpu}} total")]))
    d = d.with_panel(_series("GPU power per GPU", "watt", [
        ("fairgpu_gpu_power_watts", "{{hostname}} GPU {{gpu}}")]))
    d = d.with_panel(_series("Nodes with NVML data", "none", [
        ("fairgpu_node_nvml_available", "{{hostname}}")], max_val=1))
    d = d.with_row(dashboard.Row("Workloads and scheduler"))
    d = d.with_panel(_series("Workload throughput by model and framework", "none", [
        ("fairgpu_workload_throughput_samples_per_second", "{{model}} {{framework}} {{device}}")],
        "Mean samples per second of finished runs."))
    d = d.with_panel(_series("Workload peak GPU memory", "bytes", [
        ("fairgpu_workload_peak_memory_bytes", "{{model}} {{framework}} {{device}}")]))
    d = d.with_panel(_series("Schedule cycle duration", "s",
                             _quantiles("fairgpu_schedule_cycle_duration_seconds", "", "")))
    d = d.with_panel(_series("Ray pending tasks (expected 0)", "none", [
        ("fairgpu_ray_pending_tasks", "pending in Ray")]))
    d = d.with_panel(_series("Scheduling loop busy, by phase", "percentunit", [
        (f"sum by (phase) (rate(fairgpu_schedule_cycle_phase_seconds_total[{RI}]))", "{{phase}}")],
        "Fraction of wall time the loop spent in each phase of its cycles; stacked near 1 means the "
        "loop never waits for work."))
    return d.build()


def institution_dashboard():
    from grafana_foundation_sdk.builders import dashboard

    acct = 'account="$institution"'
    d = (dashboard.Dashboard("fairgpu: institution view").uid("fairgpu-institution").tags(["fairgpu"])
         .time("now-6h", "now").refresh("30s").with_variable(_institution_var(multi=False)))
    d = d.with_panel(_stat("Entitled slices", "none", f"fairgpu_account_entitled_slices{{{acct}}}"))
    d = d.with_panel(_stat("Allocated slices", "none", f"fairgpu_account_allocated_slices{{{acct}}}"))
    d = d.with_panel(_stat("Fair-share factor", "none", f"fairgpu_account_fairshare_ratio{{{acct}}}"))
    d = d.with_panel(_stat("Running jobs", "none", f"fairgpu_account_running_jobs{{{acct}}}"))
    d = d.with_panel(_series("Slices: allocated, entitled, guaranteed", "none", [
        (f"fairgpu_account_allocated_slices{{{acct}}}", "allocated"),
        (f"fairgpu_account_entitled_slices{{{acct}}}", "entitled"),
        (f"fairgpu_account_guaranteed_slices{{{acct}}}", "guaranteed")]))
    d = d.with_panel(_series("Pending jobs by reason", "none", [
        (f"fairgpu_account_pending_jobs{{{acct}}}", "{{reason}}")], "Why jobs wait (as squeue's reasons)."))
    d = d.with_panel(_series("Queue wait p50 / p95", "s", _quantiles("fairgpu_account_queue_wait_seconds", acct, "")))
    d = d.with_panel(_series("Usage", "none", [
        (f"rate(fairgpu_account_usage_slice_seconds_total{{{acct}}}[{RI}])", "slices in use (rate)"),
        (f"fairgpu_account_decayed_usage_slice_seconds{{{acct}}} / 3600", "decayed usage (slice-hours)")]))
    d = d.with_panel(_series("Finished jobs by status", "none", [
        (f"sum by (status) (increase(fairgpu_account_finished_jobs_total{{{acct}}}[{RI}]))", "{{status}}")]))
    d = d.with_panel(_series("Preemptions of this institution's jobs", "none", [
        (f"sum by (reason) (increase(fairgpu_account_preemptions_total{{{acct}}}[{RI}]))", "{{reason}}")]))
    return d.build()


DASHBOARDS = {"fairness.json": fairness_dashboard, "institution.json": institution_dashboard}


def render_all() -> dict[str, str]:
    """{file name: JSON text} for every dashboard."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    enc = JSONEncoder(sort_keys=True, indent=2)
    return {name: enc.encode(build()) + "\n" for name, build in DASHBOARDS.items()}


def write_all(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_all().items():
        (out / name).write_text(text)
        paths.append(out / name)
    return paths


def panel_queries(dashboard_json: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every Prometheus target, rows included."""
    out = []
    for panel in dashboard_json.get("panels", []):
        for p in [panel, *panel.get("panels", [])]:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append((p.get("title", ""), t["expr"]))
    return out


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
