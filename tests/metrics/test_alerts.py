"""Alert rules and the scrape config: promtool checks them, and each alert has a unit test that fires it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
DOC = PROM.parents[1] / "docs" / "metrics.md"


def run(*args, cwd=PROM):
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60)


def test_rules_are_valid(promtool):
    out = run(promtool, "check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout


def test_rule_unit_tests_pass(promtool):
    out = run(promtool, "test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing():
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    assert alerts == fired


def test_alerts_use_only_documented_series():
    doc = DOC.read_text()
    text = (PROM / "alerts.yml").read_text()
    for name in set(re.findall(r"\bfairgpu_\w+", text)):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert f"`{base}`" in doc, f"{name} is not in docs/metrics.md"


def test_scrape_config_is_valid(promtool, tmp_path):
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]  # where compose mounts it
    config["rule_files"] = [str(PROM / "alerts.yml")]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "fairgpu")
    assert job["authorization"]["credentials_file"] == "/etc/prometheus/fairgpu/token"  # where compose mounts it
    (tmp_path / "token").write_text("fg_example\n")
    job["authorization"]["credentials_file"] = str(tmp_path / "token")  # promtool checks that it exists
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_scrapes_with_the_token_file_compose_and_k8s_provide():
    """Per-account series need a scrape token (docs/metrics.md): Prometheus reads it from a
    file that only the fairgpu container can write and that Prometheus mounts read-only."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "fairgpu")
    assert job["authorization"]["type"] == "Bearer"
    token_dir = str(Path(job["authorization"]["credentials_file"]).parent)
    compose = yaml.safe_load((PROM.parent / "compose.yaml").read_text())
    prom_mounts = {m.split(":")[1]: m for m in compose["services"]["prometheus"]["volumes"]}
    assert prom_mounts[token_dir] == f"scrape-token:{token_dir}:ro"
    assert any(m.startswith("scrape-token:") and not m.endswith(":ro")
               for m in compose["services"]["fairgpu"]["volumes"])
    assert not any(m.startswith("fairgpu-state:") for m in compose["services"]["prometheus"]["volumes"])
    assert "scrape-token" in compose["volumes"]
    k8s = PROM.parent / "k8s"
    (endpoint,) = yaml.safe_load((k8s / "servicemonitor.yaml").read_text())["spec"]["endpoints"]
    secret = endpoint["authorization"]["credentials"]
    examples = {d["metadata"]["name"]: d for d in yaml.safe_load_all((k8s / "secrets.example.yaml").read_text())}
    assert secret["key"] in examples[secret["name"]]["stringData"]
    assert endpoint["authorization"]["type"] == "Bearer"


def test_install_script_is_idempotent_once_installed(promtool):
    import time

    started = time.monotonic()
    out = run("bash", str(PROM.parent / "install-prometheus.sh"))
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr
    assert time.monotonic() - started < 5  # skipped apt entirely
