"""deploy/prometheus/prometheus.host.yml: the scrape config for Prometheus on the host, next
to `fairgpu up`. `promtool check config` passes on it as shipped once the scrape token its
header tells you to write is there, and fails naming that file while it is not."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
HOST = PROM / "prometheus.host.yml"


def laid_out(tmp_path: Path) -> Path:
    """The host config and its rule file in a folder of their own, as in deploy/prometheus/."""
    for name in ("prometheus.host.yml", "alerts.yml"):
        shutil.copy(PROM / name, tmp_path / name)
    return tmp_path / "prometheus.host.yml"


def check(promtool: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, "check", "config", config.name], cwd=config.parent, capture_output=True,
                          text=True, timeout=60)


def test_promtool_passes_the_host_config_with_its_scrape_token(promtool, tmp_path):
    config = laid_out(tmp_path)
    (tmp_path / "scrape.token").write_text("fg_example\n")
    out = check(promtool, config)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: prometheus.host.yml is valid" in out.stdout and "rules found" in out.stdout


def test_promtool_names_the_missing_scrape_token(promtool, tmp_path):
    out = check(promtool, laid_out(tmp_path))
    assert out.returncode != 0 and "scrape.token" in out.stdout + out.stderr


def test_the_host_config_scrapes_fairgpu_up_as_compose_does():
    from scheduler.cli.service import up

    host = yaml.safe_load(HOST.read_text())
    compose = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (job,) = host["scrape_configs"]
    (deployed,) = [j for j in compose["scrape_configs"] if j["job_name"] == "fairgpu"]
    port = next(p.default for p in up.params if p.name == "port")
    assert job["static_configs"] == [{"targets": [f"127.0.0.1:{port}"]}]
    assert {k: v for k, v in job.items() if k not in ("static_configs", "authorization")} == \
        {k: v for k, v in deployed.items() if k not in ("static_configs", "authorization")}
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "scrape.token"}
    assert host["rule_files"] == ["alerts.yml"] and host["global"] == compose["global"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "scrape.token"], cwd=PROM, timeout=30)
    assert ignored.returncode == 0, "deploy/prometheus/scrape.token (a secret) must be git-ignored"
