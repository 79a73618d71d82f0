"""The schema of a pipeline folder's dopplergen.json, checked when the folder is loaded.

Only what loading and serving need is required; every other key (dataset, training, evaluation, conditions,
enrolled users, provenance, ...) is kept as it is, so writers can add fields without touching this file.
A fault is reported with the field's name, before any model is built: never a pipeline that loads and then
fails on its first request.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.paths import UnsafePathError, check_user_ids

FORMAT_VERSION = 1
META_FILE = "dopplergen.json"
# kl: AutoencoderKL + UNet (the main line); vq-latent: VQModel + the same UNet on pre-quantisation latents
# (LDM "VQ-reg"); vq-diffusion: VQModel + discrete-diffusion Transformer2DModel over code indices
# (VQ-Diffusion).
ROUTES = ("kl", "vq-latent", "vq-diffusion")
# name and version go into HTTP response headers: printable Latin-1, no control characters.
_HEADER_SAFE = re.compile(r"^[\x20-\x7e\xa0-\xff]*$")


class MetaError(ValueError):
    """dopplergen.json is missing, not JSON, or breaks the schema; the message names the field."""


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


class NormalizationMeta(BaseModel):
    """models.normalization.Normalization as stored: the dB range kept and the mapping's kind."""

    model_config = ConfigDict(extra="forbid")  # an unknown field here would change the mapping silently

    dyn_range_db: float = Field(gt=0)  # dB below the peak mapped to [-1, 1]
    kind: Literal["linear_db"] = "linear_db"

    _check_finite = field_validator("dyn_range_db")(_finite)


class PipelineMeta(BaseModel):
    """What `DopplerPipeline.load` and the service read from dopplergen.json."""

    model_config = ConfigDict(extra="allow")

    format_version: Literal[1]  # = FORMAT_VERSION; a newer writer needs a newer reader
    route: Literal["kl", "vq-latent", "vq-diffusion"] = "kl"
    image_size: tuple[int, int]  # (doppler bins, time frames) of one spectrogram
    normalization: NormalizationMeta  # dB <-> model space; without it outputs cannot be mapped back
    channels: int | None = Field(None, ge=1)  # default: the autoencoder's in_channels
    latent_scaling_factor: float | None = Field(None, gt=0)  # recorded copy of vae.config.scaling_factor
    name: str = "dopplergen"
    version: str = "0"
    # Sampling defaults of the service and the exporter (their own defaults apply when absent).
    num_inference_steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0)
    # Pipelines with conditions: (g, g_c) of models.sampling's compositional guidance, for requests naming a
    # condition.
    identity_guidance_scale: float | None = Field(None, ge=0)
    condition_guidance_scale: float | None = Field(None, ge=0)
    scheduler: str | None = None

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1:
            raise ValueError("both sides must be >= 1")
        return v

    @field_validator("name", "version", mode="before")
    @classmethod
    def _header_safe(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)  # e.g. "version": 2
        if isinstance(v, str) and not _HEADER_SAFE.match(v):
            raise ValueError(
                "must be printable Latin-1 text without control characters (it is sent in HTTP headers)"
            )
        return v

    @field_validator("latent_scaling_factor", "guidance_scale", "identity_guidance_scale",
                     "condition_guidance_scale")
    @classmethod
    def _finite_or_none(cls, v: float | None) -> float | None:
        return None if v is None else _finite(v)


def describe(exc: ValidationError, source: str) -> str:
    """One line per fault, each naming its field: `dopplergen.json: normalization: Field required`."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        lines.append(f"{source}: {field}: {err.get('msg', 'invalid')}")
    return "\n".join(lines)


def validate_meta(meta: Any, source: str = META_FILE) -> PipelineMeta:
    """Check a dopplergen.json mapping against the schema; MetaError names every faulty field."""
    if isinstance(meta, dict) and "format_version" in meta and meta["format_version"] != FORMAT_VERSION:
        raise MetaError(f"{source}: format_version: unsupported {meta['format_version']!r} (this dopplergen "
                        f"reads {FORMAT_VERSION})")
    try:
        return PipelineMeta.model_validate(meta)
    except ValidationError as exc:
        raise MetaError(describe(exc, source)) from None


def read_meta(folder: str | Path) -> tuple[dict[str, Any], PipelineMeta]:
    """Read and check <folder>/dopplergen.json: (the mapping as written, its checked view)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise MetaError(f"{folder} is not a dopplergen pipeline folder (no {META_FILE})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetaError(f"{path}: not valid JSON ({exc})") from None
    return raw, validate_meta(raw, str(path))


def check_folder(folder: str | Path, route: str) -> None:
    """Every sub-folder the route needs, each with its config and safetensors weights."""
    folder = Path(folder)
    denoiser = "transformer" if route == "vq-diffusion" else "unet"
    needed = {"vae": ("config.json", "*.safetensors"), denoiser: ("config.json", "*.safetensors"),
              "user_encoder": ("config.json", "*.safetensors"), "scheduler": ("scheduler_config.json",)}
    for sub, patterns in needed.items():
        if not (folder / sub).is_dir():
            raise MetaError(f"{folder}: missing sub-folder {sub}/ (route {route})")
        for pattern in patterns:
            if not any((folder / sub).glob(pattern)):
                raise MetaError(f"{folder}/{sub}: no {pattern} (an incomplete export?)")


def check_against_models(meta: PipelineMeta, in_channels: int, downsample: int, users: list[str]) -> None:
    """What dopplergen.json says must fit the loaded networks (else the first request would fail)."""
    if meta.channels is not None and meta.channels != in_channels:
        raise MetaError(f"{META_FILE}: channels: {meta.channels}, but the autoencoder takes {in_channels}")
    if any(side % downsample for side in meta.image_size):
        raise MetaError(f"{META_FILE}: image_size: {list(meta.image_size)} is not a multiple of the "
                        f"autoencoder's downsampling factor {downsample}")
    if not users:
        raise MetaError("user_encoder: the pipeline has no users")
    try:  # user IDs name folders (generate, enrolment): never a path
        check_user_ids(users, "user_encoder: users")
    except UnsafePathError as exc:
        raise MetaError(str(exc)) from None
