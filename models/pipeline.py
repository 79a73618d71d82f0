"""The pipeline folder: save and load vae/, unet/, user_encoder/, scheduler/ and dopplergen.json (safetensors only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from models.builders import build_noise_scheduler, build_unet, build_user_encoder, build_vae
from models.normalization import Normalization
from models.presets import Preset, get_preset
from models.user_encoder import UserEncoder

FORMAT_VERSION = 1
META_FILE = "dopplergen.json"
ROUTES = ("kl",)  # latent space of stage 1; the experimental VQ route adds its own


class PipelineError(RuntimeError):
    """A pipeline folder is missing, incomplete or of an unknown format."""


@dataclass
class DopplerPipeline:
    """Stage-1 autoencoder, stage-2 UNet, user encoder and noise schedule, plus the metadata that ties them."""

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    user_encoder: UserEncoder
    scheduler_config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- metadata accessors -------------------------------------------------------------------
    @property
    def users(self) -> list[str]:
        return self.user_encoder.users

    @property
    def normalization(self) -> Normalization:
        return Normalization.from_dict(self.meta["normalization"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.meta["image_size"]
        return int(h), int(w)

    @property
    def channels(self) -> int:
        return int(self.meta.get("channels", self.vae.config.in_channels))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        h, w = self.image_size
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (int(self.vae.config.latent_channels), h // down, w // down)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "dopplergen"))

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "0"))

    @property
    def route(self) -> str:
        return str(self.meta.get("route", "kl"))

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    # ---- device placement ------------------------------------------------------------------------
    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> DopplerPipeline:
        """Move to a device; the UNet and user encoder take `dtype`, the small VAE stays fp32 for a safe decode."""
        # Cast only when the dtype changes: diffusers warns on every dtype-carrying .to().
        for module, want in ((self.unet, dtype), (self.user_encoder, dtype), (self.vae, torch.float32)):
            module.to(device=device) if module.dtype == want else module.to(device=device, dtype=want)
        for m in (self.unet, self.user_encoder, self.vae):
            m.eval().requires_grad_(False)
        return self

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(path / "vae", safe_serialization=True)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        self.user_encoder.save_pretrained(path / "user_encoder", safe_serialization=True)
        DDPMScheduler.from_config(self.scheduler_config).save_config(path / "scheduler")
        meta = {"format_version": FORMAT_VERSION, **self.meta}
        meta["latent_scaling_factor"] = float(self.vae.config.scaling_factor)
        (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> DopplerPipeline:
        """Load a pipeline folder with stock diffusers `from_pretrained` (safetensors only, nothing unpickled)."""
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise PipelineError(f"{path} is not a dopplergen pipeline folder (no {META_FILE})")
        meta = json.loads(meta_file.read_text())
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise PipelineError(f"{meta_file}: unsupported format_version {version!r} (expected {FORMAT_VERSION})")
        for sub in ("vae", "unet", "user_encoder", "scheduler"):
            if not (path / sub).is_dir():
                raise PipelineError(f"{path}: missing sub-folder {sub}/")
        kw = dict(use_safetensors=True, low_cpu_mem_usage=False)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kw)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kw)
        user_encoder = UserEncoder.from_pretrained(path, subfolder="user_encoder", **kw)
        scheduler_config = dict(DDPMScheduler.from_pretrained(path, subfolder="scheduler").config)
        pipe = cls(vae=vae, unet=unet, user_encoder=user_encoder, scheduler_config=scheduler_config, meta=meta)
        return pipe.to(device, dtype)


def build_untrained_pipeline(
    preset: str | Preset, users: list[str], dyn_range_db: float = 60.0, **meta: Any
) -> DopplerPipeline:
    """A pipeline with random weights from a preset: the starting point of training, and a fixture for tests."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    base_meta = {
        "name": f"dopplergen-{preset.name}",
        "version": "untrained",
        "route": "kl",
        "preset": preset.to_dict(),
        "image_size": [preset.image_size, preset.image_size],
        "channels": preset.channels,
        "normalization": Normalization(dyn_range_db=dyn_range_db).to_dict(),
    }
    base_meta.update(meta)
    pipe = DopplerPipeline(
        vae=build_vae(preset),
        unet=build_unet(preset),
        user_encoder=build_user_encoder(preset, users),
        scheduler_config=dict(build_noise_scheduler(preset).config),
        meta=base_meta,
    )
    return pipe.to("cpu")
