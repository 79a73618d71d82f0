"""The pipeline folder: save and load vae/, unet/, user_encoder/, [condition_encoder/,] [texture/,] scheduler/
and dopplergen.json (safetensors only)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler, Transformer2DModel, UNet2DConditionModel, VQDiffusionScheduler

from models import autoencoder as ae
from models.builders import (
    build_autoencoder,
    build_noise_scheduler,
    build_transformer,
    build_unet,
    build_user_encoder,
    build_vq_scheduler,
)
from models.conditions import ConditionEncoder, encode_context
from models.normalization import Normalization
from models.pipeline_meta import (
    FORMAT_VERSION,
    META_FILE,
    ROUTES,
    MetaError,
    check_against_models,
    check_folder,
    read_meta,
    validate_meta,
)
from models.presets import Preset, get_preset
from models.texture import TextureBank
from models.user_encoder import UserEncoder

# FORMAT_VERSION, META_FILE, ROUTES: the dopplergen.json schema and its checks live in
# models/pipeline_meta.py.
SCHEDULER_CLASSES = {"DDPMScheduler": DDPMScheduler, "VQDiffusionScheduler": VQDiffusionScheduler}


def route_of(vae: ae.Autoencoder, denoiser: torch.nn.Module) -> str:
    """The route follows from the two stage classes; dopplergen.json records it for readers of the folder."""
    if isinstance(denoiser, Transformer2DModel):
        if not ae.is_vq(vae):
            raise PipelineError("a discrete-diffusion Transformer needs a VQModel stage 1")
        return "vq-diffusion"
    return "vq-latent" if ae.is_vq(vae) else "kl"


def pipeline_fingerprint(path: str | Path) -> str:
    """Hash of the pipeline's weights and metadata files: the identity of the generator behind the files.
    An evaluation report written into the folder (`evaluate --out P/report`: a folder with a report.json) is
    not part of the generator, nor is dopplergen.json, whose "evaluation" field may change without changing
    it."""
    h = hashlib.sha256()
    path = Path(path)
    reports = {r.parent for r in path.rglob("report.json")}
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")):
        if f.name == "dopplergen.json" or reports.intersection(f.parents):
            continue
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class PipelineError(RuntimeError):
    """A pipeline folder is missing, incomplete or of an unknown format."""


@dataclass
class DopplerPipeline:
    """Stage-1 autoencoder, stage-2 denoiser, user encoder and noise schedule, plus the metadata that ties
    them.

    `denoiser` is a UNet2DConditionModel (routes kl and vq-latent, saved as unet/) or a Transformer2DModel
    over code indices (route vq-diffusion, saved as transformer/); `scheduler_config` is the matching
    DDPMScheduler or VQDiffusionScheduler config.
    """

    vae: ae.Autoencoder
    denoiser: UNet2DConditionModel | Transformer2DModel
    user_encoder: UserEncoder
    scheduler_config: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    # speed, aspect, ... -> extra tokens beside the user's (condition_encoder/); None: identity is the only
    # condition
    condition_encoder: ConditionEncoder | None = None
    # residuals of real recordings added to decoded samples (models/texture.py); None: the decoder's mean as
    # is
    texture: TextureBank | None = None

    @property
    def unet(self) -> UNet2DConditionModel | Transformer2DModel:
        """The stage-2 network under its Stable Diffusion name (a Transformer2DModel on the vq-diffusion
        route)."""
        return self.denoiser

    @unet.setter
    def unet(self, module: torch.nn.Module) -> None:  # e.g. torch.compile(pipe.unet)
        self.denoiser = module

    @property
    def denoiser_folder(self) -> str:
        return "transformer" if isinstance(self.denoiser, Transformer2DModel) else "unet"

    # ---- metadata accessors -------------------------------------------------------------------
    @property
    def users(self) -> list[str]:
        return self.user_encoder.users

    @property
    def conditions(self) -> list[str]:
        """Names of the conditions a request may set (dopplergen.json["conditions"] has their ranges and
        stats)."""
        return self.condition_encoder.names if self.condition_encoder is not None else []

    def encode_context(self, user_idx: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """Each row's cross-attention tokens: its user's, then its conditions' (values (N, K), NaN =
        absent)."""
        return encode_context(self.user_encoder, self.condition_encoder, user_idx, values)

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
        """(channels, h, w) of the stage-2 latent grid; the vq-diffusion route has h*w code indices
        instead."""
        h, w = self.image_size
        down = ae.downsample(self.vae)
        return (ae.latent_channels(self.vae), h // down, w // down)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "dopplergen"))

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "0"))

    @property
    def route(self) -> str:
        return route_of(self.vae, self.denoiser)

    @property
    def device(self) -> torch.device:
        return self.user_encoder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.user_encoder.dtype

    # ---- device placement ------------------------------------------------------------------------
    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> DopplerPipeline:
        """Move to a device; the denoiser and user encoder take `dtype`, the small VAE stays fp32 for a safe
        decode."""
        # Cast only when the dtype changes: diffusers warns on every dtype-carrying .to().
        placed = [(self.denoiser, dtype), (self.user_encoder, dtype), (self.vae, torch.float32)]
        if self.condition_encoder is not None:
            placed.append((self.condition_encoder, dtype))
        for module, want in placed:
            module.to(device=device) if module.dtype == want else module.to(device=device, dtype=want)
        for m, _ in placed:
            m.eval().requires_grad_(False)
        return self

    @property
    def scheduler_class(self) -> type:
        return VQDiffusionScheduler if self.route == "vq-diffusion" else DDPMScheduler

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        meta = {"format_version": FORMAT_VERSION, **self.meta, "route": self.route}
        meta["latent_scaling_factor"] = float(self.vae.config.scaling_factor)
        try:  # never write a folder that load() would refuse
            check_against_models(
                validate_meta(meta), self.vae.config.in_channels, ae.downsample(self.vae), self.users
            )
        except MetaError as exc:
            raise PipelineError(str(exc)) from None
        path.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(path / "vae", safe_serialization=True)
        self.denoiser.save_pretrained(path / self.denoiser_folder, safe_serialization=True)
        self.user_encoder.save_pretrained(path / "user_encoder", safe_serialization=True)
        if self.condition_encoder is not None:
            self.condition_encoder.save_pretrained(path / "condition_encoder", safe_serialization=True)
        if self.texture is not None:
            self.texture.save_pretrained(path / "texture", safe_serialization=True)
        self.scheduler_class.from_config(self.scheduler_config).save_config(path / "scheduler")
        (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> DopplerPipeline:
        """Load a pipeline folder with stock diffusers `from_pretrained` (safetensors only, nothing
        unpickled)."""
        path = Path(path)
        try:  # the schema (models/pipeline_meta.py) first: a fault names its field before any model is built
            meta, checked = read_meta(path)
            check_folder(path, checked.route)
        except MetaError as exc:
            raise PipelineError(str(exc)) from None
        route = checked.route
        denoiser_cls, sub_denoiser = (
            (Transformer2DModel, "transformer") if route == "vq-diffusion" else (UNet2DConditionModel, "unet")
        )
        kw = dict(use_safetensors=True, low_cpu_mem_usage=False)
        vae = ae.load_autoencoder(str(path), subfolder="vae")
        denoiser = denoiser_cls.from_pretrained(path, subfolder=sub_denoiser, **kw)
        user_encoder = UserEncoder.from_pretrained(path, subfolder="user_encoder", **kw)
        condition_encoder = (ConditionEncoder.from_pretrained(path, subfolder="condition_encoder", **kw)
                             # absent: a user-only pipeline
                             if (path / "condition_encoder").is_dir() else None)
        texture = (TextureBank.from_pretrained(path, subfolder="texture", **kw)
                   if (path / "texture").is_dir() else None)  # absent: samples are the decoder's mean
        sched_file = path / "scheduler" / "scheduler_config.json"
        sched_name = json.loads(sched_file.read_text()).get("_class_name") if sched_file.is_file() else None
        if sched_name not in SCHEDULER_CLASSES:
            raise PipelineError(f"{path}/scheduler: unsupported scheduler {sched_name!r}")
        scheduler_config = dict(
            SCHEDULER_CLASSES[sched_name].from_pretrained(path, subfolder="scheduler").config
        )
        pipe = cls(vae=vae, denoiser=denoiser, user_encoder=user_encoder, scheduler_config=scheduler_config,
                   meta=meta, condition_encoder=condition_encoder, texture=texture)
        if texture is not None and tuple(texture.residuals.shape[1:]) != (pipe.channels, *pipe.image_size):
            raise PipelineError(f"{path}/texture: residuals of shape {tuple(texture.residuals.shape[1:])}, "
                                f"but the pipeline makes {(pipe.channels, *pipe.image_size)}")
        if pipe.route != route:
            raise PipelineError(f"{path}: dopplergen.json says route {route!r} but the folder holds "
                                f"{pipe.route!r}")
        try:
            check_against_models(checked, vae.config.in_channels, ae.downsample(vae), user_encoder.users)
        except MetaError as exc:
            raise PipelineError(f"{path}: {exc}") from None
        return pipe.to(device, dtype)


def build_untrained_pipeline(
    preset: str | Preset, users: list[str], dyn_range_db: float = 60.0, route: str = "kl", **meta: Any
) -> DopplerPipeline:
    """A pipeline with random weights from a preset: the starting point of training, and a fixture for
    tests."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {list(ROUTES)}")
    base_meta = {
        "name": f"dopplergen-{preset.name}",
        "version": "untrained",
        "route": route,
        "preset": preset.to_dict(),
        "image_size": [preset.image_size, preset.image_size],
        "channels": preset.channels,
        "normalization": Normalization(dyn_range_db=dyn_range_db).to_dict(),
    }
    base_meta.update(meta)
    vae = build_autoencoder(preset, "kl" if route == "kl" else "vq")
    if route == "vq-diffusion":
        denoiser, sched = build_transformer(preset), build_vq_scheduler(preset)
    else:
        denoiser, sched = (
            build_unet(preset, in_channels=ae.latent_channels(vae)), build_noise_scheduler(preset)
        )
    pipe = DopplerPipeline(vae=vae, denoiser=denoiser, user_encoder=build_user_encoder(preset, users),
                           scheduler_config=dict(sched.config), meta=base_meta)
    return pipe.to("cpu")
