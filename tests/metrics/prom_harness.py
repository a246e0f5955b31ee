"""A real Prometheus server for tests: scrape one target every second, query PromQL over HTTP.

Invariants:
- Listens on loopback port 0 (any free port: the kernel picks it as Prometheus binds,
  and the harness reads it from Prometheus' own "Listening on" log line), with its TSDB
  in a temporary directory; `stop()` (or leaving the `with` block) terminates it and
  nothing is left running.
- It uses the `metric_relabel_configs` of the `fairgpu` job in
  deploy/prometheus/prometheus.yml and, given a scrape token, sends it from a file as
  that job does, so queries see what a deployed Prometheus sees.
- `query()` raises PromQLError when Prometheus rejects a query; it never retries.
- `substitute()` expands Grafana's variables the way Grafana would before sending.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOYED_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"

GRAFANA_DEFAULTS = {
    "__rate_interval": "30s",
    "__interval": "5s",
    "__interval_ms": "5000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}


class PromQLError(RuntimeError):
    pass


LISTENING = re.compile(r'msg="?Listening on"? .*address=\[?([0-9a-fA-F.:]+?)\]?:(\d+)')


def substitute(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace $var, ${var} and [[var]] (Grafana's forms), longest names first."""
    values = {**GRAFANA_DEFAULTS, **(variables or {})}
    for name in sorted(values, key=len, reverse=True):
        v = values[name]
        expr = expr.replace("${" + name + "}", v).replace("[[" + name + "]]", v)
        expr = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", lambda _: v, expr)
    if re.search(r"\$\{?[A-Za-z_]", expr):
        raise ValueError(f"unsubstituted Grafana variable in {expr!r}")
    return expr


def deployed_relabelling() -> list[dict]:
    config = yaml.safe_load(DEPLOYED_CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "fairgpu")
    return job.get("metric_relabel_configs", [])


class Prometheus:
    """Scrapes `target` as the deployed `fairgpu` job does, or runs the whole `config`
    given (a prometheus.yml as a dict)."""

    def __init__(self, binary: str, target: str, workdir: Path, metrics_path: str = "/metrics",
                 config: dict | None = None, token: str | None = None) -> None:
        self.binary, self.target, self.workdir, self.metrics_path = binary, target, Path(workdir), metrics_path
        self.config = config
        self.token = token  # a scrape token: sent as the deployed job sends it (a credentials file)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "Prometheus":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.config or {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "fairgpu", "metrics_path": self.metrics_path,
                "static_configs": [{"targets": [self.target]}],
                "metric_relabel_configs": deployed_relabelling(),
            }],
        }
        if self.token and self.config is None:
            token_file = self.workdir / "token"
            token_file.write_text(self.token + "\n")
            token_file.chmod(0o600)
            config["scrape_configs"][0]["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = open(self.workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
             "--web.listen-address=127.0.0.1:0", "--log.level=info"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.logs()}")
            if not self.port:  # Prometheus says where it listens once it has bound
                m = LISTENING.search(self.logs(tail=None))
                if m:
                    self.port = int(m.group(2))
                else:
                    time.sleep(0.05)
                    continue
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready after {timeout_s}s: {self.logs()}")

    def logs(self, tail: int | None = 2000) -> str:
        text = (self.workdir / "prometheus.log").read_text(errors="replace")
        return text[-tail:] if tail else text

    def wait_for_scrapes(self, n: int = 1, timeout_s: float = 20.0) -> None:
        """Until `n` successful scrapes of the target are stored."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query('count_over_time(up{job="fairgpu"}[1m]) and up{job="fairgpu"} == 1')
            if result and float(result[0]["value"][1]) >= n:
                return
            time.sleep(0.25)
        targets = self._get("/api/v1/targets")
        raise TimeoutError(f"no {n} successful scrapes of {self.target}: {json.dumps(targets)[:1500]}")

    def _get(self, path: str, params: dict | None = None) -> dict:
        url = self.url + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:  # 400/422: a bad query
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')} ({params})")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query now; the vector's samples (or a scalar as one sample)."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's label_values(match, label) lists."""
        return self._get(f"/api/v1/label/{label}/values", {"match[]": match})

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
