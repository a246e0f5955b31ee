"""The list of top-level commands (help lists them sorted). Each module defines its own.

Invariants:
- Every module named here imports in milliseconds: no torch, TensorFlow, Ray or
  database driver at module level (docs/ARCHITECTURE.md, "What may import what").
- ``find(name)`` imports only the module of the command asked for when its attribute
  is spelt as the command (``hold`` -> ``hold``, ``show-x`` -> ``show_x``); a command
  named otherwise is still found, by importing the modules in order until one has it.
"""
from __future__ import annotations

import importlib

# (module, attribute) of each top-level command or group.
_COMMANDS = [
    ("scheduler.cli.service", "up"),
    ("scheduler.cli.service", "demo"),
    ("scheduler.cli.admin", "admin"),
    ("scheduler.cli.share", "share"),
    ("scheduler.cli.report", "report"),
    ("scheduler.cli.bench", "bench"),
    ("scheduler.cli.jobs", "login"),
    ("scheduler.cli.jobs", "submit"),
    ("scheduler.cli.jobs", "jobs"),
    ("scheduler.cli.jobs", "job"),
    ("scheduler.cli.control", "cancel"),  # scancel: IDs, --array, --state, --account
    ("scheduler.cli.control", "hold"),
    ("scheduler.cli.control", "release"),
    ("scheduler.cli.control", "requeue"),
    ("scheduler.cli.control", "update"),
    ("scheduler.cli.control", "capacity"),
    ("scheduler.cli.jobs", "logs"),
    ("scheduler.cli.simulate", "simulate"),
    ("scheduler.cli.forecast", "forecast"),
]


def _load(module: str, attr: str):
    return getattr(importlib.import_module(module), attr)


def all_commands() -> list:
    return [_load(m, attr) for m, attr in _COMMANDS]


def find(name: str):
    """The command called ``name``, or None."""
    for m, attr in _COMMANDS:  # the cheap way: one module
        if attr == name.replace("-", "_"):
            command = _load(m, attr)
            if command.name == name:
                return command
    return next((c for c in all_commands() if c.name == name), None)


# The top-level modules each pyproject extra brings that commands import (``extra_for``).
_EXTRAS = {
    "server": ("sqlmodel", "sqlalchemy", "alembic", "psycopg", "numpy", "PIL", "ray", "fastapi", "starlette",
               "pydantic", "uvicorn", "httpx", "prometheus_client", "pynvml"),
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "keras"),
    "plot": ("matplotlib",),
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is read by its top level), or None."""
    top = (module or "").split(".")[0]
    return next((extra for extra, modules in _EXTRAS.items() if top in modules), None)
