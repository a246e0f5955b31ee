"""The list of top-level commands. Each module defines its own; keep imports light.

Every module named here must import in milliseconds: no torch, TensorFlow, Ray
or database driver at module level.
"""
import importlib

# (module, attribute) of each top-level command or group, in help order.
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
    ("scheduler.cli.jobs", "cancel"),
    ("scheduler.cli.jobs", "logs"),
    ("scheduler.cli.simulate", "simulate"),
    ("scheduler.cli.forecast", "forecast"),
]


def all_commands():
    return [getattr(importlib.import_module(m), attr) for m, attr in _COMMANDS]
