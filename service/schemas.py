"""Request and response bodies of the HTTP API (pydantic 2); limits that depend on settings are checked in
routes."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.sampling import SAMPLERS

SchedulerName = Literal["ddpm", "ddim", "dpmsolver++", "vq-diffusion"]
assert set(SchedulerName.__args__) == set(SAMPLERS), "keep the schema in step with models.sampling"
# Colour maps offered for PNG output; matplotlib supplies the lookup tables.
COLORMAPS = ("gray", "viridis", "magma", "inferno", "plasma", "cividis", "turbo", "jet")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed accepts 64-bit seeds; JSON clients prefer < 2**53


class GenerateRequest(BaseModel):
    """POST /generate. Unset steps/guidance fall back to the pipeline's defaults (see GET /info)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256, description="a user from GET /users")
    num_samples: int = Field(1, ge=1, description="1..max_samples_per_request")
    num_inference_steps: int | None = Field(None, ge=1, description="1..max_steps; default from the pipeline")
    guidance_scale: float | None = Field(
        None, ge=0.0, le=50.0, description="classifier-free guidance; 1 = off"
    )
    condition_guidance_scale: float | None = Field(
        None, ge=0.0, le=50.0,
        description=(
            "pipelines with conditions: how strongly to follow speed_mps / aspect_deg / activity, apart from "
            "guidance_scale (which then weighs identity); default from the pipeline (GET /info)"
        ),
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="sample i uses seed + i; null = random seeds"
    )
    scheduler: SchedulerName | None = Field(
        None,
        description="null = the pipeline's own (GET /info); vq-diffusion pipelines take only 'vq-diffusion'",
    )
    format: Literal["png", "npy"] = "png"
    bit_depth: Literal[8, 16] = Field(8, description="PNG bit depth (grayscale); colour maps are 8-bit")
    colormap: Literal[COLORMAPS] | None = Field(
        None, description="PNG only: colour-map a 1-channel spectrogram"
    )
    # Conditions (GET /info "conditions" lists what the model takes, with ranges); omitted = drawn per sample
    # from the user's training distribution, seeded by the sample's seed, and echoed in each item's
    # "conditions".
    speed_mps: float | None = Field(
        None, description="walking speed, m/s; omitted: drawn from the user's own"
    )
    aspect_deg: float | None = Field(
        None,
        description=(
            "aspect angle off the walking direction, degrees "
            "(0 = walking straight at the radar); omitted: drawn"
        ),
    )
    activity: str | None = Field(
        None, min_length=1, max_length=64, description="activity label; omitted: drawn"
    )

    @field_validator("guidance_scale", "condition_guidance_scale", "speed_mps", "aspect_deg")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class Timings(BaseModel):
    queue_ms: float = Field(description="request admitted -> its last sample's first denoising step")
    inference_ms: float = Field(
        description=(
            "its first denoising step -> its last sample decoded (steps are shared with whatever else runs)"
        )
    )
    total_ms: float = Field(description="request received -> response ready, encoding included")


class ModelRef(BaseModel):
    name: str
    version: str
    route: str


class SampleItem(BaseModel):
    seed: int
    format: Literal["png", "npy"]
    media_type: str
    shape: list[int] = Field(description="(channels, doppler, time) of the spectrogram")
    dtype: str = Field(description="float32 for npy; uint8/uint16 PNG pixels")
    db_range: tuple[float, float] = Field(description="dB values covered: (-dyn_range_db, 0)")
    mapping: str = Field(description="how stored values map to dB")
    colormap: str | None = None
    data: str = Field(description="base64 of the .png or .npy file bytes")
    conditions: dict[str, float | str | None] | None = Field(
        None, description="the conditions this sample was generated with (omitted ones as drawn; null where "
        "the activity has none, e.g. no walking speed for a fall); null: none")


class GenerateResponse(BaseModel):
    items: list[SampleItem]
    seeds: list[int]
    num_inference_steps: int
    guidance_scale: float
    condition_guidance_scale: float | None = Field(
        None,
        description="the condition guidance used (null: plain guidance, or a pipeline without conditions)",
    )
    scheduler: str
    timings: Timings
    model: ModelRef


class UsersResponse(BaseModel):
    users: list[str]
    count: int
    enrolled: list[str] = Field(default_factory=list,
                                description="the users added by enrolment (POST /users)")


class EnrolAccepted(BaseModel):
    user_id: str
    status: str = Field(description="enrolling")


class UserStatus(BaseModel):
    user_id: str
    status: str = Field(description="enrolling | ready | failed (deleted: the answer to DELETE)")
    progress: float = Field(description="0..1: share of the enrolment's optimiser steps done")
    error: str | None = None
    enrolled: bool = Field(description="added by enrolment (deletable), not trained with the model")
    domain: dict[str, Any] | None = Field(
        default=None, description="how far the recordings are from the pipeline's domain (models/domain.py): "
        "stage-1 reconstruction error in dB, its ratio to the pipeline's own held-out error, out_of_domain, "
        "and a one-line message naming `dopplergen adapt` when out of domain; null until measured")


class Example(BaseModel):
    path: str = Field(description="the file, relative to the dataset folder")
    split: str | None
    conditions: dict[str, Any] = Field(description="the manifest's other columns for this recording")
    format: str = "npy"
    media_type: str
    shape: list[int] = Field(description="(channels, doppler, time)")
    dtype: str
    mapping: str
    data: str = Field(description="base64 of the .npy file bytes (float32 dB relative to the peak)")


class ExamplesResponse(BaseModel):
    user_id: str
    items: list[Example]
    total: int = Field(description="recordings of this user in the dataset (of this split, if one was asked)")
    axes: dict[str, Any] = Field(
        description="the dataset's axes (as in GET /info), for the first item's shape")


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str = Field(description="machine-readable reason, e.g. invalid, unknown_user, queue_full")
    message: str
    details: list[ErrorDetail] | None = None
