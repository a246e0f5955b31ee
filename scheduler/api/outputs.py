"""What the institution routes answer: a job, its logs, the share explained.

These models document the answers in the OpenAPI document; the services build the
values (``services.jobs.job_to_public``, ``services.logs``, ``services.share``) and the
models hold exactly their keys (tests compare them with ``PUBLIC_KEYS`` and friends).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class JobProgress(BaseModel):
    """A running job's latest progress, as its task reported it (at most once a second)."""

    step: float | None = Field(description="Steps done (a hold job: seconds held)")
    steps: float | None = Field(description="Steps asked for (a hold job: seconds to hold)")
    samples_per_second: float | None = Field(description="Recent throughput (none for a hold job)")
    eta_s: float | None = Field(description="Seconds left, as the task estimates it")
    updated_at: str | None = Field(description="When the task reported it (ISO 8601)")


class JobPublic(BaseModel):
    """Everything known about a job."""

    id: int
    account: str
    model: str
    framework: str | None
    mode: str
    slices: int
    state: str = Field(description="PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED or TIMEOUT")
    reason: str | None = Field(description="Why it waits (Priority, Resources, QuotaCap, Fragmentation, "
                                           "Infeasible, JobHeldUser, Dependency, DependencyNeverSatisfied, ...), or why it ended: TimeLimit, or the first line of "
                                           "its message for a FAILED or CANCELLED job")
    reason_message: str | None
    submitted_at: str
    started_at: str | None
    finished_at: str | None
    node: str | None
    gpu: int | None
    attempts: int
    preemptions: int
    result: dict[str, Any] | None
    error: str | None
    time_limit_s: float | None = Field(description="Wall-time limit of each attempt, in seconds")
    progress: JobProgress | None = Field(description="The latest progress its task reported (none yet: null)")
    position: int | None = Field(description="A pending job's place in the order the policy would admit the "
                                             "whole queue's jobs, every account's (1 = next)")
    estimated_start: str | None = Field(description="A pending job's expected start (ISO 8601), by replaying "
                                                    "the policy over running jobs' limits and progress; null "
                                                    "when nothing bounds the jobs it waits on")
    array_id: int | None = Field(description="The job array it belongs to (its first job's id; submit --count), "
                                             "for cancel --array")


class JobEventOut(BaseModel):
    id: int = Field(description="Increasing: pass the last one seen as after_event")
    at: str
    kind: str = Field(description="submitted, admitted, started, preempted, requeued, finished, failed, "
                                  "cancelled or timeout")
    message: str | None


class OutputChunk(BaseModel):
    attempt: int
    offset: int = Field(description="Where the text starts in the attempt's output (bytes)")
    text: str


class JobLogs(BaseModel):
    """A job's events and its task's own output, attempt by attempt."""

    id: int
    state: str
    events: list[JobEventOut]
    output: list[OutputChunk]
    cursor: str = Field(description="<attempt>:<byte offset> where this read stopped: pass it as since")
    more: bool = Field(description="The size limit stopped this read early: read again from cursor")


class ShareExplained(BaseModel):
    """One account's standing, in words."""

    account: str
    parent: str | None
    owed_slices: float = Field(description="Slices it is entitled to now, given everyone's demand")
    got_slices: int = Field(description="Slices its running jobs hold")
    guaranteed_slices: int
    pending_jobs: int
    fairshare_factor: float
    usage_to_share: float | None = Field(description="Its effective usage over its normalised shares "
                                                     "(1 = exactly its share; null without shares)")
    cause: str = Field(description="Why its standing is what it is")
