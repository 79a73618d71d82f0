"""Stage 2: user-conditioned latent diffusion on frozen-autoencoder latents; exports the pipeline folder (EMA
weights).

With an AutoencoderKL this is the main route (kl); with a VQModel it is the LDM "VQ-reg" variant (vq-latent):
the same UNet on the scaled pre-quantisation latents, quantised by the decoder at sampling time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from torch import nn

from models import autoencoder as ae
from models.builders import build_condition_encoder, build_unet, build_user_encoder
from models.condition_stats import describe_conditions, encoder_specs
from models.conditions import drop_conditions, encode_context
from models.losses import cache_latents, latent_loss, noised, time_shifts
from models.normalization import Normalization
from models.pipeline import DopplerPipeline, route_of
from models.presets import Preset, get_preset
from training.cli_types import add_threads_argument, set_threads
from training.config import ConfigError, UNetConfig, add_config_arguments, run_stage
from training.stages.export import PipelineExport
from training.stages.loop import TrainLoop, load_frozen_autoencoder, load_split, start_run

# what --conditions auto takes when the manifest has them
CONDITION_COLUMNS = ("speed_mps", "aspect_deg", "activity")


class Denoiser(nn.Module):
    """UNet + user encoder (+ condition encoder) as one module: one DDP wrapper, one optimiser, one EMA."""

    def __init__(self, preset: Preset, users: list[str], in_channels: int | None = None,
                 conditions: list[dict] | None = None, pooled_context: bool = False):
        super().__init__()
        self.unet = build_unet(preset, in_channels=in_channels, pooled_context=pooled_context)
        self.user_encoder = build_user_encoder(preset, users)
        self.condition_encoder = build_condition_encoder(preset, conditions) if conditions else None

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, user_idx: torch.Tensor,
                values: torch.Tensor | None = None) -> torch.Tensor:
        # (N, T_u + T_c, D)
        context = encode_context(self.user_encoder, self.condition_encoder, user_idx, values)
        return self.unet(z_t, t, encoder_hidden_states=context).sample  # (N, c, h, w), c = latent channels


def condition_names(cfg: UNetConfig, columns: dict) -> list[str]:
    """The manifest columns this run conditions on (--conditions)."""
    if cfg.conditions in ("", "none"):
        return []
    if cfg.conditions == "auto":
        return [c for c in CONDITION_COLUMNS if c in columns]
    names = [c.strip() for c in cfg.conditions.split(",") if c.strip()]
    missing = [c for c in names if c not in columns]
    if missing:
        raise ConfigError(f"conditions {missing} are not columns of {cfg.data}/manifest.csv (it has "
                          f"{sorted(columns)})")
    return names


def init_from_pipeline(model: Denoiser, path: str, users: list[str]) -> None:
    """Start from a trained pipeline's UNet and user rows (the condition encoder too, if it has the same
    one)."""
    src = DopplerPipeline.load(path)
    if src.users != list(users):
        raise ConfigError(f"init_from {path} has users {src.users[:5]}..., the data has {list(users)[:5]}...")
    missing, unexpected = model.unet.load_state_dict(src.denoiser.state_dict(), strict=False)
    if unexpected or any(not k.startswith("add_embedding.") for k in missing):
        raise ConfigError(f"init_from {path}: its UNet differs from this run's (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); only the pooled-context embedding may be new")
    if missing:  # a new pooled-context embedding starts at zero: the run starts from exactly the source model
        nn.init.zeros_(model.unet.add_embedding.norm2.weight)
        nn.init.zeros_(model.unet.add_embedding.norm2.bias)
    model.user_encoder.load_state_dict(src.user_encoder.state_dict())
    if model.condition_encoder is not None and src.condition_encoder is not None and \
            src.condition_encoder.specs == model.condition_encoder.specs:
        model.condition_encoder.load_state_dict(src.condition_encoder.state_dict())


def main(cfg: UNetConfig) -> Path:
    """Train stage 2 and export the pipeline folder to cfg.out."""
    # ---- setup ---------------------------------------------------------------------------------------
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.with_name(out.name + "-run")
    accelerator = start_run(cfg, run_dir)
    device = accelerator.device

    # ---- data: frozen VAE, latents cached in memory ----------------------------------------------------
    preset = get_preset(cfg.preset, channels=cfg.channels)
    if cfg.prediction_type:
        preset = preset.with_overrides(prediction_type=cfg.prediction_type)
    x, labels, ds = load_split(cfg.data, "train", cfg.channels, preset.image_size)  # (N, C, H, W)
    norm = Normalization.from_meta(ds.meta)
    vae = load_frozen_autoencoder(cfg, preset, device, accelerator.print)
    scaling = float(vae.config.scaling_factor)
    w = x.shape[-1]
    shifts = time_shifts(w, cfg.latent_shifts) if cfg.time_shift else [0]
    lat_mean, lat_std = cache_latents(vae, x, shifts)  # (S, N, c, h, w), c = ae.latent_channels(vae)
    accelerator.print(f"cached latents {tuple(lat_mean.shape)} of {len(ds.users)} users, scaling "
                      f"{scaling:.4f}")

    # ---- model, noise schedule, the shared loop (optimiser, EMA, resume, logs) -----------------------------
    names = condition_names(cfg, ds.extra)
    desc = describe_conditions(ds.extra, [ds.users[i] for i in labels], names) if names else None
    model = Denoiser(preset, ds.users, ae.latent_channels(vae), encoder_specs(desc, names) if names else None,
                     pooled_context=bool(names) and cfg.condition_route == "tokens+added")
    if cfg.init_from:
        init_from_pipeline(model, cfg.init_from, ds.users)
    model.to(device)
    cond_values = None
    if model.condition_encoder is not None:  # (N, K): every train recording's condition values
        cond_values = model.condition_encoder.values_tensor([{n: ds.extra[n][i] for n in names}
                                                             for i in range(len(x))])
        accelerator.print(f"conditioning on {names} (each absent with p={cfg.condition_drop_prob})")
    null_user = model.user_encoder.null_index
    noise_sched = DDPMScheduler(**preset.scheduler_config())
    num_t = noise_sched.config.num_train_timesteps
    loop = TrainLoop(cfg, accelerator, model, run_dir, ds)
    exporter = PipelineExport.attach(loop, vae=vae, network="unet", scheduler_config=noise_sched.config,
                                     preset=preset, ds=ds, norm=norm, x=x, labels=labels,
                                     route=route_of(vae, loop.shadow.unet))
    meta = exporter.pipe.meta
    if desc:  # ranges, encodings and per-user training distributions: what an omitted condition is drawn from
        meta["conditions"] = desc
        # serving defaults of requests that name a condition (models.sampling.resolve)
        meta.update(identity_guidance_scale=cfg.identity_guidance_scale,
                    condition_guidance_scale=cfg.condition_guidance_scale)
        exporter.pipe.condition_encoder = loop.shadow.condition_encoder

    # ---- train -----------------------------------------------------------------------------------------
    for step in loop.steps():
        gen, idx = loop.draw(step, len(x))  # this step's generator and batch indices
        b = len(idx)
        s = torch.randint(0, len(shifts), (b,), generator=gen)
        eps_lat = torch.randn((b, *lat_mean.shape[2:]), generator=gen)
        z0 = ae.scale(vae, lat_mean[s, idx] + lat_std[s, idx] * eps_lat)  # (B, c, h, w): a posterior sample
        user = labels[idx].clone()
        # classifier-free guidance dropout
        user[torch.rand(b, generator=gen) < cfg.null_user_prob] = null_user
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, num_t, (b,), generator=gen)
        values = None
        # drawn after the identity-only run's draws: that run stays bit for bit the same
        if cond_values is not None:
            values = drop_conditions(cond_values[idx], cfg.condition_drop_prob, gen)
            # the guidance branch: null user with every condition absent
            values[user == null_user] = float("nan")
        z0, noise, t, user = z0.to(device), noise.to(device), t.to(device), user.to(device)
        z_t, target = noised(noise_sched, z0, noise, t)
        loop.set_lr(step)
        with accelerator.autocast():
            pred = loop.model(z_t, t, user, values)
        # Min-SNR if gamma > 0
        loop.update(latent_loss(noise_sched, pred, target, t, cfg.snr_gamma).mean(), step, b)

    # ---- export the pipeline folder (EMA weights) ----------------------------------------------------------
    return exporter.export(out, loss_title="train-unet (Min-SNR weighted)" if cfg.snr_gamma else "train-unet",
                           sampler_text=f"{cfg.num_inference_steps} DPM-Solver++ steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, UNetConfig)
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    return run_stage("unet", args, main, "data", "out", "vae")
