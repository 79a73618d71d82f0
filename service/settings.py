"""Service settings: environment variables with the DOPPLERGEN_ prefix, validated when constructed."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# <repo root>/checkpoints/demo, resolved from this file so it does not depend on the working directory.
DEFAULT_PIPELINE = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
DTYPES = ("auto", "fp32", "fp16", "bf16")


class Settings(BaseSettings):
    """Every knob of the HTTP service; `DOPPLERGEN_<NAME>` in the environment, CLI flags override."""

    model_config = SettingsConfigDict(env_prefix="DOPPLERGEN_", extra="ignore", frozen=True)

    # --- model --------------------------------------------------------------------------------------
    pipeline: Path = DEFAULT_PIPELINE  # exported pipeline folder (what `train-unet` writes)
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on CUDA, fp32 on the CPU
    # Before /readyz turns 200, compile (when on) and run a few steps at every padded batch size: that
    # measures the step costs admission relies on (service.worker). Off: nothing is measured, so admission
    # lets every request in (only max_queue still refuses) until real steps have run.
    warmup: bool = True
    data: Path | None = None  # a dataset folder: the web page shows its real recordings beside generated ones
    # --- batching -----------------------------------------------------------------------------------
    max_batch_size: int = Field(16, ge=1, le=1024)  # slots: rows (samples) per denoising step
    # Rows join at the next step boundary, so nothing waits for a batch to fill: when the device is idle the
    # first step starts this long after work arrives (unset: 0, start at once).
    max_wait_ms: float | None = Field(None, ge=0, le=60_000)
    max_queue: int = Field(256, ge=1, le=1_000_000)  # queued samples; beyond this requests get 429
    request_timeout_s: float = Field(60.0, gt=0, le=3600)  # queue + inference budget; then 504
    # fixed: pad every step to max_batch_size, so a sample is bitwise identical alone or batched (BLAS picks
    # kernels by batch size); none: run the real row count; buckets: pad to the next power of two
    # (1, 2, 4, ...), so a lone request runs at its own size and samples agree within 0.05 dB whatever
    # shares the device. auto: buckets everywhere.
    batch_padding: Literal["auto", "fixed", "buckets", "none"] = "auto"
    # torch.compile(mode="reduce-overhead") of the denoiser (CUDA graphs), one graph per padded batch size,
    # warmed before /readyz turns ready. auto: on with CUDA, off elsewhere; off turns it off.
    compile: Literal["auto", "on", "off"] = "auto"
    # --- limits and auth ----------------------------------------------------------------------------
    api_key: SecretStr | None = None  # when set, /generate, /users and /info need X-API-Key or Bearer
    max_samples_per_request: int = Field(16, ge=1, le=4096)
    max_steps: int = Field(1000, ge=1, le=10_000)  # capped again by the scheduler's training steps
    max_body_bytes: int = Field(65_536, ge=256, le=64 * 1024 * 1024)  # larger bodies get 413
    # --- enrolment (POST /users) ----------------------------------------------------------------------
    # enrolled users (safetensors + json) kept here across restarts; unset: default_users_dir(pipeline);
    # "none": memory only (they last until the server stops)
    users_dir: Path | Literal["none"] | None = None
    max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024**3)  # POST /users body (3 to 50 files)
    max_file_bytes: int = Field(2 * 1024 * 1024, ge=256, le=1024**3)  # one uploaded recording
    # device jobs waiting or running; beyond this POST /users gets 429
    max_enrolments: int = Field(4, ge=1, le=1000)
    # optimiser steps per enrolment (unset: the default)
    enrol_steps: int | None = Field(None, ge=1, le=100_000)
    # seconds between scans of the users folder for people enrolled or deleted through other replicas; 0: off
    users_scan_s: float = Field(2.0, ge=0, le=3600)
    # --- server -------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        v = v.strip().lower()
        if not _DEVICE_RE.match(v):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    @field_validator("api_key", "max_wait_ms", "data", "users_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # DOPPLERGEN_API_KEY= (empty, as docker-compose passes an unset variable) means "not set".
        return None if v in ("", None) else v

    @field_validator("users_dir", mode="before")
    @classmethod
    def _none_is_memory_only(cls, v: object) -> object:
        return "none" if isinstance(v, str) and v.strip().lower() == "none" else v

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.data is not None and not self.data.is_dir():
            raise ValueError(f"data: {self.data} is not a folder (a dataset folder with manifest.csv)")
        if isinstance(self.users_dir, Path) and self.users_dir.exists() and not self.users_dir.is_dir():
            raise ValueError(f"users_dir: {self.users_dir} is a file, not a folder (enrolled users are kept "
                             "in a folder; name a folder, or none to keep them in memory only)")
        if self.max_samples_per_request > self.max_queue:
            raise ValueError(
                f"max_samples_per_request ({self.max_samples_per_request}) exceeds max_queue "
                f"({self.max_queue}): such a request could never be queued"
            )
        return self

    # --- resolved values (need torch, so imported lazily) ---------------------------------------------
    def resolved_users_dir(self) -> Path | None:
        """Where enrolled users are kept: users_dir when set, None (memory only) for "none", else
        default_users_dir(pipeline); a file in its place is refused."""
        if self.users_dir == "none":
            return None
        path = self.users_dir if self.users_dir is not None else default_users_dir(self.pipeline)
        if path.exists() and not path.is_dir():
            raise ValueError(f"users_dir: {path} is a file, not a folder")
        return path

    def resolved_device(self) -> str:
        """`auto` -> `cuda` when a GPU is visible, else `cpu`; an explicit CUDA device must exist."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} requested but CUDA is not available")
        return self.device

    def resolved_dtype(self, device: str) -> str:
        """`auto` -> fp16 on CUDA, fp32 elsewhere; fp16 on the CPU is refused (slow and unsupported
        kernels)."""
        if self.dtype == "auto":
            return "fp16" if device.startswith("cuda") else "fp32"
        if self.dtype == "fp16" and device == "cpu":
            raise ValueError("dtype fp16 is not supported on the CPU; use fp32 or bf16")
        return self.dtype

    def resolved_max_wait_ms(self, device: str) -> float:
        if self.max_wait_ms is not None:
            return self.max_wait_ms
        return 0.0

    def resolved_padding(self, device: str) -> str:
        return "buckets" if self.batch_padding == "auto" else self.batch_padding

    def resolved_compile(self, device: str) -> bool:
        return device.startswith("cuda") if self.compile == "auto" else self.compile == "on"


def default_users_dir(pipeline: Path) -> Path:
    """`<data dir>/dopplergen/users/<pipeline folder name>-<12 hex digits of sha256(its resolved path)>`, so
    two pipelines never share people. Data dir: $XDG_DATA_HOME when it is an absolute path, else
    ~/.local/share (the XDG base directory rule)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    resolved = Path(pipeline).expanduser().resolve()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.name).strip("._") or "pipeline"
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return base / "dopplergen" / "users" / f"{name}-{digest}"


def torch_dtype(name: str):  # -> torch.dtype
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
