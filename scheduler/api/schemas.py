"""Request bodies of the API. Every model forbids unknown fields (HTTP 422).

Only shapes and types are checked here; the rules (names, ranges, known model, slices
that fit a node, limits) live in the services (``scheduler.services.validate``), so the
CLI and the API refuse alike. The ranges are declared in the schema (``minimum`` and
``maximum``, quoted in each description) from ``quota.limits`` and checked there.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scheduler.services.validate import DURATION_MAX_LEN, NAME_MAX_LEN, JOB_NUMBERS, limits
from scheduler.vocab import FRAMEWORKS, HOLD, KINDS, MODES, SPEC_KEYS, spec_keys

Name = Field(min_length=1, max_length=NAME_MAX_LEN)


def ranged(rng: limits.Range, description: str, **kw):
    """A field whose range (from quota.limits) is declared, described and left to the services."""
    return Field(description=f"{description} ({rng.describe()})",
                 json_schema_extra={"minimum": rng.low, "maximum": rng.high}, **kw)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(Body):
    model: str = Field(min_length=1, max_length=64, description=f"{', '.join(KINDS[:-1])} or {KINDS[-1]}")
    framework: str | None = Field(default=None, max_length=32,
                                  description=f"{' or '.join(FRAMEWORKS)} (not for {HOLD})")
    mode: str = Field(default="train", max_length=16, description=" or ".join(MODES))
    slices: int = ranged(JOB_NUMBERS["slices"], "GPU slices wanted", strict=True)
    account: str | None = Field(default=None, max_length=NAME_MAX_LEN, description="default: the token's own account")
    steps: int | None = ranged(JOB_NUMBERS["steps"], "training or inference steps", default=None, strict=True)
    batch_size: int | None = ranged(JOB_NUMBERS["batch_size"], "samples per batch", default=None, strict=True)
    image_size: int | None = ranged(JOB_NUMBERS["image_size"], "input size (CycleGAN)", default=None, strict=True)
    seconds: float | None = ranged(JOB_NUMBERS["seconds"], "hold jobs: how long to hold the slices", default=None)
    count: int | None = ranged(JOB_NUMBERS["count"], "a job array: this many identical jobs, all or none; "
                               "the answer is {\"ids\": [...]}", default=None, strict=True)
    time_limit_s: float | None = ranged(limits.TIME_LIMIT, "wall-time limit of each attempt, in seconds; at most "
                                        "the account's maximum; null: the account's default (else its maximum)",
                                        default=None)
    command: list[str] | None = Field(default=None, max_length=256,
                                      description="script jobs: the command line, run in the working directory")
    upload: str | None = Field(default=None, max_length=64,
                               description="script jobs: the working directory's id from POST /v1/uploads")
    after: list[int] | None = Field(default=None, min_length=1, max_length=64,
                                    description="start only after these jobs SUCCEEDED (Slurm's --dependency=afterok); "
                                                "one that ends otherwise leaves it pending, DependencyNeverSatisfied")

    def spec(self) -> dict:
        keys = spec_keys(self.model)
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        # Fields that do not belong to this kind of job reach the service, which names them.
        for k in SPEC_KEYS:
            if k not in keys and getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


class InheritedSettings(Body):
    """An account's own time and scripts settings; null inherits the parent's (services.inherited)."""

    default_time_s: float | None = ranged(limits.TIME_LIMIT, "time limit of a job submitted without one, in "
                                          "seconds; null: inherited from the parent", default=None)
    max_time_s: float | None = ranged(limits.TIME_LIMIT, "the longest time limit a job may ask for, in seconds; "
                                      "null: inherited from the parent", default=None)
    allow_scripts: bool | None = Field(default=None, strict=True, description="may run its own code; "
                                       "null: inherited from the parent (at the top: not allowed)")


class AccountCreate(InheritedSettings):
    name: str = Field(min_length=1, max_length=NAME_MAX_LEN,
                      description="'/'-separated parts of lowercase letters, digits, '.', '_', '-'; "
                                  "a sub-account's name is its parent's name, '/', one part (or one part)")
    weight: float = ranged(limits.WEIGHT, "fair-share weight, relative to its siblings")
    guaranteed: int = ranged(limits.GUARANTEED, "slices it gets first", default=0, strict=True)
    max_slices: int | None = ranged(limits.MAX_SLICES, "cap on slices held at once", default=None, strict=True)
    max_pending: int | None = ranged(limits.MAX_PENDING, "limit on waiting jobs", default=None, strict=True)
    parent: str | None = Field(default=None, max_length=NAME_MAX_LEN)


class AccountUpdate(InheritedSettings):
    """Only the fields sent change; null clears max_slices, max_pending or parent, and makes
    default_time_s, max_time_s or allow_scripts inherited from the parent again."""

    weight: float | None = ranged(limits.WEIGHT, "fair-share weight, relative to its siblings", default=None)
    guaranteed: int | None = ranged(limits.GUARANTEED, "slices it gets first", default=None, strict=True)
    max_slices: int | None = ranged(limits.MAX_SLICES, "cap on slices held at once", default=None, strict=True)
    max_pending: int | None = ranged(limits.MAX_PENDING, "limit on waiting jobs", default=None, strict=True)
    parent: str | None = Field(default=None, max_length=NAME_MAX_LEN)


class NodeCapacityBody(Body):
    gpus: int = ranged(limits.GPUS_PER_NODE, "GPUs on the node", strict=True)
    slices_per_gpu: int | None = ranged(limits.SLICES_PER_GPU, "slices per GPU (default: the GPU type's)",
                                        default=None, strict=True)
    gpu_type: str = Field(default="T4", min_length=1, max_length=NAME_MAX_LEN)


class TokenCreate(Body):
    account: str | None = Field(default=None, max_length=NAME_MAX_LEN, description="null: an admin token")
    name: str | None = Field(default=None, max_length=NAME_MAX_LEN)
    expires: str | None = Field(default=None, max_length=DURATION_MAX_LEN,
                                description="e.g. 30d, 12h; null: never")


class SettingValue(Body):
    value: str = Field(min_length=1, max_length=NAME_MAX_LEN)


