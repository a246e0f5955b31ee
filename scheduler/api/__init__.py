"""fairgpu's HTTP API (FastAPI): thin routers over ``scheduler.services``.

Importing this package imports FastAPI; the CLI imports it only inside the
commands that serve it. See ``scheduler.api.app.create_app``.
"""
from scheduler.api.app import API_PREFIX, MAX_BODY_BYTES, create_app
from scheduler.api.metrics import metrics_route

__all__ = ["API_PREFIX", "MAX_BODY_BYTES", "create_app", "metrics_route"]
