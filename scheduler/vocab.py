"""The names that cross layers, each written once; every other module derives from these.

Why one module: a name copied by hand drifts (the exporter once kept its own final
states without TIMEOUT, and publishing a timed-out job raised). So the store's column
values, the API's and CLI's choices, the loop's phases and the metrics' label sets all
read the tuples below, and `tests/metrics/test_label_sets.py` walks every value through
the real metric calls.

Why here: standard library only (and `workloads.registry`, pure data), on the lowest
floor of `scheduler/`, so every layer may import it: the store, the services, the API,
the CLI at import time (click's `Choice`), the metrics and the Ray side (tasks).

Owners:
- job states: `JobState` (the store keeps it as a VARCHAR, and re-exports it;
  transitions live in store/transitions.py); `FINAL_STATES` its final ones, in order.
- the scheduling cycle's phases: `PHASES`, in order (the loop names its phases from it;
  the exporter's `phase` label set is it).
- job kinds: the study's models (`workloads.registry.MODELS`, which owns them with
  `FRAMEWORKS` and `MODES`), `HOLD` and `SCRIPT` (`KINDS`: all of them); the spec keys each
  kind takes (`spec_keys`, `SPEC_KEYS`).
- reasons the loop stores on a job beside the policy's: `RAY_REFUSED` (a pending job held
  back) and `TIME_LIMIT` (why a TIMEOUT job ended); `GATE_REASONS`, why a pending job is
  kept from the policy by its own gate (services.gates: Slurm's `JobHeldUser`,
  `Dependency`, `DependencyNeverSatisfied`).
- not here: the policy's pending reasons and preemption kinds are quota's
  (`quota.REASONS`, `quota.PREEMPTION_KINDS`, in quota/snapshot.py); quota is pure
  standard library too, so the metrics take their label sets from there.
"""
from __future__ import annotations

from enum import Enum

from workloads.registry import FRAMEWORKS, MODELS, MODES


class JobState(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"  # stopped at its wall-time limit

    def is_finished(self) -> bool:
        return self in _FINAL

    def is_active(self) -> bool:
        return not self.is_finished()


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)
_FINAL = frozenset(FINAL_STATES)

PHASES = ("collect", "settle", "load", "decide", "admit", "start")

HOLD = "hold"  # holds its slices for `seconds` (no framework)
SCRIPT = "script"  # an institution's own command in its uploaded working directory
KINDS = (*MODELS, HOLD, SCRIPT)
MODEL_SPEC_KEYS = ("steps", "batch_size", "image_size")
_OWN_SPEC_KEYS = {HOLD: ("seconds",), SCRIPT: ("command", "upload")}
SPEC_KEYS = (*MODEL_SPEC_KEYS, *(k for keys in _OWN_SPEC_KEYS.values() for k in keys))  # every kind's

RAY_REFUSED = "RayRefused"
TIME_LIMIT = "TimeLimit"

# Job events that open and end an attempt: services.history reads attempts by them, and
# `fairgpu logs` places each attempt's output between them.
ADMITTED = "admitted"
BACK_TO_QUEUE = frozenset({"preempted", "requeued"})
FINISHING = frozenset({"finished", "failed", "cancelled", "timeout"})
ENDS_ATTEMPT = BACK_TO_QUEUE | FINISHING
JOB_HELD_USER = "JobHeldUser"  # fairgpu hold: never admitted until fairgpu release
DEPENDENCY = "Dependency"  # submit --after: some job it waits for has not SUCCEEDED yet
DEPENDENCY_NEVER_SATISFIED = "DependencyNeverSatisfied"  # one it waits for ended otherwise
GATE_REASONS = (JOB_HELD_USER, DEPENDENCY, DEPENDENCY_NEVER_SATISFIED)


def spec_keys(kind: str) -> tuple[str, ...]:
    """The spec keys a job of `kind` takes (a model's, for a name that is none of KINDS:
    the services refuse it by name)."""
    return _OWN_SPEC_KEYS.get(kind, MODEL_SPEC_KEYS)


__all__ = ["DEPENDENCY", "DEPENDENCY_NEVER_SATISFIED", "FINAL_STATES", "FRAMEWORKS", "GATE_REASONS", "HOLD",
           "JOB_HELD_USER", "KINDS", "MODELS", "MODEL_SPEC_KEYS", "MODES", "PHASES",
           "RAY_REFUSED", "SCRIPT", "SPEC_KEYS", "TIME_LIMIT", "JobState", "spec_keys"]
