"""The institutions' CLI talks to the API: where the server is, which token, and the calls.

Invariants:
- Settings come from, in order: the ``--url`` option, ``FAIRGPU_URL`` /
  ``FAIRGPU_TOKEN``, then the config file ``fairgpu login`` writes
  (``platformdirs.user_config_dir("fairgpu")/config.json``, mode 0600). The URL
  defaults to ``fairgpu up``'s ``http://127.0.0.1:8470``.
- Every failure is one line and exit 1 (``click.ClickException``): a server that
  cannot be reached names the URL tried; an HTTP error shows the server's detail.
- The calls use the standard library's ``http.client`` (one connection per call, JSON in
  and out): a client command loads no HTTP library, no TLS context it does not use, and
  nothing of the server (tests/cli_client/test_light_client.py), so it starts in well
  under 0.3 s (docs/benchmarks.md, "CLI start").
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

ENV_URL = "FAIRGPU_URL"
ENV_TOKEN = "FAIRGPU_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8470"
TIMEOUT_S = 30.0

url_option = click.option("--url", "url", default=None, metavar="URL",
                          help=f"fairgpu server (default: ${ENV_URL}, then `fairgpu login`, then {DEFAULT_URL}).")


def config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("fairgpu")) / "config.json"


def load_config() -> dict:
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def save_config(url: str, token: str) -> Path:
    """Write the config file readable by its owner only (its folder made 0700)."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps({"url": url, "token": token}, indent=2).encode("utf-8"))
    finally:
        os.close(fd)
    return path


def api_configured(url: str | None = None) -> bool:
    """True when a server is named (option, environment or config file)."""
    return bool(url or os.environ.get(ENV_URL) or load_config().get("url"))


@dataclass(frozen=True)
class Api:
    url: str
    token: str | None

    @classmethod
    def from_settings(cls, url: str | None = None) -> "Api":
        config = load_config()
        base = url or os.environ.get(ENV_URL) or config.get("url") or DEFAULT_URL
        token = os.environ.get(ENV_TOKEN) or config.get("token")
        return cls(base.rstrip("/"), token)

    def call(self, method: str, path: str, *, body: dict | None = None, params: dict | None = None,
             content: bytes | None = None, content_type: str | None = None) -> Any:
        """One request; the answer's JSON. A refused request raises ClickException with the
        server's one-line detail, an unreachable server one naming the URL."""
        if not self.token:
            raise click.ClickException(f"no API token: set {ENV_TOKEN} or run `fairgpu login --url URL --token TOKEN`")
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            content = json.dumps(body).encode("utf-8")
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        status, reason, data = _request(self.url, method, path + _query(params), headers, content)
        if status >= 400:
            raise click.ClickException(_detail(status, reason, data))
        try:
            return json.loads(data)
        except ValueError:
            raise click.ClickException(f"{self.url} answered HTTP {status} with no JSON: is it a fairgpu server?") from None


def _query(params: dict | None) -> str:
    """``?a=1&b=true`` from the non-None values (booleans as true/false, as the API reads them)."""
    from urllib.parse import urlencode

    items = {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in (params or {}).items()
             if v is not None}
    return "?" + urlencode(items, doseq=True) if items else ""


def _request(base: str, method: str, target: str, headers: dict, content: bytes | None) -> tuple[int, str, bytes]:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise click.ClickException(f"not an http(s) URL: {base}")
    conn_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_class(url.hostname, url.port, timeout=TIMEOUT_S)
        try:
            conn.request(method, url.path.rstrip("/") + target, body=content, headers=headers)
            response = conn.getresponse()
            return response.status, response.reason, response.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise click.ClickException(f"cannot reach the fairgpu server at {base}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    from scheduler.text import first_line

    return first_line(exc)


def _detail(status: int, reason: str, data: bytes) -> str:
    from scheduler.text import first_line

    try:
        detail = json.loads(data).get("detail")
    except (ValueError, AttributeError):
        detail = None
    fallback = f"HTTP {status} {reason}".strip()
    return first_line(detail, fallback) if isinstance(detail, str) else fallback
