"""Gates: what keeps a pending job from the policy besides the policy itself (Slurm's
user holds and `afterok` dependencies), and the rule that says why.

Invariants:
- A gate is a `job_gate` row: `held` (fairgpu hold) and `after` (the job ids it starts
  after, `submit --after`). A job with neither has no row.
- `why_gated` is the one rule, pure: a held job waits `JobHeldUser`; else a job whose
  every `after` job SUCCEEDED is free; else one that some `after` job can no longer
  satisfy (FAILED, CANCELLED, TIMEOUT, or gone) waits `DependencyNeverSatisfied`, as
  Slurm's does: it stays pending (cancel it, or requeue the job it waits for, and it
  waits `Dependency` again); else it waits `Dependency`.
- The loader (services.snapshot) keeps gated jobs out of the policy's state (so out of
  every Snapshot and estimate) and releases them when the gate opens; the API shows
  the reason from the same rule (services.jobs.public), before its group's. Reading is cheap: the rows of the jobs named, and
  the states of the jobs they wait for.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from scheduler.store import Job, JobGate, JobState
from scheduler.vocab import DEPENDENCY, DEPENDENCY_NEVER_SATISFIED, JOB_HELD_USER

MAX_AFTER = 64  # jobs one job may start after
_G = JobGate.__table__.c
_J = Job.__table__.c
_NEVER = (JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)

Gate = tuple[bool, tuple[int, ...]]  # (held, after)


def why_gated(gate: Gate, states: Mapping[int, JobState]) -> tuple[str, str] | None:
    """(reason, message) for a pending job with this gate, given the states of the jobs it
    waits for (a missing id: gone); None when nothing gates it."""
    held, after = gate
    if held:
        return JOB_HELD_USER, "held by the user: fairgpu release ID lets it run"
    never = [j for j in after if states.get(j) is None or states[j] in _NEVER]
    if never:
        ended = ", ".join(f"{j} ({states[j].value if j in states else 'gone'})" for j in never)
        return DEPENDENCY_NEVER_SATISFIED, f"it starts after jobs that will never succeed: {ended}"
    waiting = [j for j in after if states[j] != JobState.SUCCEEDED]
    if waiting:
        return DEPENDENCY, f"waits for jobs {', '.join(map(str, waiting))} to succeed"
    return None


def read(conn, ids: Iterable[int] | None = None) -> dict[int, Gate]:
    """{job id: (held, after)} of the gate rows of pending jobs (only of `ids`, if given)."""
    if ids is None:
        stmt = sa.select(_G.job_id, _G.held, _G.after).select_from(
            JobGate.__table__.join(Job.__table__, _J.id == _G.job_id)).where(_J.state == JobState.PENDING)
        return {job_id: (bool(held), tuple(after or ())) for job_id, held, after in conn.execute(stmt)}
    # By the gate table's key first, then the states of the few rows found: a join filtered
    # on the job's state lets SQLite walk every pending job (100k of them) for a few ids.
    ids = sorted(set(ids))
    found: dict[int, Gate] = {}
    for at in range(0, len(ids), 900):
        stmt = sa.select(_G.job_id, _G.held, _G.after).where(_G.job_id.in_(ids[at:at + 900]))
        for job_id, held, after in conn.execute(stmt):
            found[job_id] = (bool(held), tuple(after or ()))
    if not found:
        return {}
    pending = {j for j, state in states(conn, found).items() if state == JobState.PENDING}
    return {j: gate for j, gate in found.items() if j in pending}


def states(conn, ids: Iterable[int]) -> dict[int, JobState]:
    """{job id: state} of the jobs named that exist."""
    ids = sorted(set(ids))
    out: dict[int, JobState] = {}
    for at in range(0, len(ids), 900):
        for job_id, state in conn.execute(sa.select(_J.id, _J.state).where(_J.id.in_(ids[at:at + 900]))):
            out[job_id] = JobState(state)
    return out


def reasons(conn, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """{job id: (reason, message)} for the gated ones among these pending jobs."""
    gates = read(conn, ids)
    known = states(conn, {j for _h, after in gates.values() for j in after})
    out = {}
    for job_id, gate in gates.items():
        why = why_gated(gate, known)
        if why is not None:
            out[job_id] = why
    return out


class GateCache:
    """The loader's view of the gates, kept up to date with what changed: `gated` is
    {pending job id: (reason, message)}. `refresh(conn, touched)` re-reads the gate rows
    of the touched jobs and the states of touched jobs that others wait for; `rebuild`
    reads them all (the loader's rebuild). Every gate change and every state change
    appends a job event, so the loader's change cursor names every job to touch."""

    def __init__(self) -> None:
        self.gates: dict[int, Gate] = {}
        self.states: dict[int, JobState] = {}  # of the jobs some gate waits for
        self.gated: dict[int, tuple[str, str]] = {}

    def rebuild(self, conn) -> None:
        self.gates = read(conn)
        self.states = states(conn, {j for _h, after in self.gates.values() for j in after})
        self._evaluate()

    def refresh(self, conn, touched: Iterable[int]) -> None:
        touched = set(touched)
        if not touched:
            return
        fresh = read(conn, touched)
        for job_id in touched:
            if job_id in fresh:
                self.gates[job_id] = fresh[job_id]
            else:
                self.gates.pop(job_id, None)
        wanted = {j for _h, after in self.gates.values() for j in after}
        need = (wanted & touched) | (wanted - set(self.states))
        if need:
            self.states.update(states(conn, need))
        self.states = {j: s for j, s in self.states.items() if j in wanted}
        self._evaluate()

    def _evaluate(self) -> None:
        out = {}
        for job_id, gate in self.gates.items():
            why = why_gated(gate, self.states)
            if why is not None:
                out[job_id] = why
        self.gated = out
