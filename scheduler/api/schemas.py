"""Request bodies of the API. Every model forbids unknown fields (HTTP 422).

Only shapes and types are checked here; the rules (known model, slices that fit a
node, limits) live in the services, so the CLI and the API refuse alike.
"""
from __future__ import annotations


from pydantic import BaseModel, ConfigDict, Field

Name = Field(min_length=1, max_length=200)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(Body):
    model: str = Field(min_length=1, max_length=64, description="conv6, vgg16, resnet18, cyclegan or hold")
    framework: str | None = Field(default=None, max_length=32, description="pytorch or tensorflow (not for hold)")
    mode: str = Field(default="train", max_length=16, description="train or infer")
    slices: int = Field(strict=True, description="GPU slices wanted (> 0)")
    account: str | None = Field(default=None, max_length=200, description="default: the token's own account")
    steps: int | None = Field(default=None, strict=True)
    batch_size: int | None = Field(default=None, strict=True)
    image_size: int | None = Field(default=None, strict=True)
    seconds: float | None = Field(default=None, description="hold jobs: how long to hold the slices")
    count: int | None = Field(default=None, strict=True,
                              description="a job array: this many identical jobs, all or none; "
                                          "the answer is {\"ids\": [...]}")

    def spec(self) -> dict:
        keys = ("seconds",) if self.model == "hold" else ("steps", "batch_size", "image_size")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        # Fields that do not belong to this kind of job reach the service, which names them.
        for k in ("steps", "batch_size", "image_size", "seconds"):
            if k not in keys and getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


class AccountCreate(Body):
    name: str = Name
    weight: float = Field(description="fair-share weight (> 0)")
    guaranteed: int = Field(default=0, strict=True)
    max_slices: int | None = Field(default=None, strict=True)
    max_pending: int | None = Field(default=None, strict=True)
    parent: str | None = Field(default=None, max_length=200)


class AccountUpdate(Body):
    """Only the fields sent change; null clears max_slices, max_pending or parent."""

    weight: float | None = None
    guaranteed: int | None = Field(default=None, strict=True)
    max_slices: int | None = Field(default=None, strict=True)
    max_pending: int | None = Field(default=None, strict=True)
    parent: str | None = Field(default=None, max_length=200)


class NodeCapacityBody(Body):
    gpus: int = Field(strict=True)
    slices_per_gpu: int | None = Field(default=None, strict=True)
    gpu_type: str = Field(default="T4", min_length=1, max_length=32)


class TokenCreate(Body):
    account: str | None = Field(default=None, max_length=200, description="null: an admin token")
    name: str | None = Field(default=None, max_length=200)
    expires: str | None = Field(default=None, max_length=32, description="e.g. 30d, 12h; null: never")


class SettingValue(Body):
    value: str = Field(min_length=1, max_length=200)


