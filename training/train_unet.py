"""Stage 2: user-conditioned latent diffusion on frozen-autoencoder latents; exports the pipeline folder (EMA weights).

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
from models.builders import build_unet, build_user_encoder
from models.normalization import Normalization
from models.pipeline import route_of
from models.presets import Preset, get_preset
from training.config import UNetConfig, add_config_arguments, run_stage
from training.loop import (
    Stage2Loop,
    draw_batch,
    load_frozen_autoencoder,
    load_split,
    start_run,
    step_generator,
)
from training.losses import cache_latents, latent_loss, noised, time_shifts


class Denoiser(nn.Module):
    """UNet + user encoder as one module: one DDP wrapper, one optimiser, one EMA."""

    def __init__(self, preset: Preset, users: list[str], in_channels: int | None = None):
        super().__init__()
        self.unet = build_unet(preset, in_channels=in_channels)
        self.user_encoder = build_user_encoder(preset, users)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, user_idx: torch.Tensor) -> torch.Tensor:
        return self.unet(z_t, t, encoder_hidden_states=self.user_encoder(user_idx)).sample  # (N, 4, h, w)


def main(cfg: UNetConfig) -> Path:
    """Train stage 2 and export the pipeline folder to cfg.out."""
    # ---- setup ---------------------------------------------------------------------------------------
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.with_name(out.name + "-run")
    accelerator = start_run(cfg, run_dir)
    device, rank = accelerator.device, accelerator.process_index

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
    lat_mean, lat_std = cache_latents(vae, x, shifts)  # (S, N, 4, h, w)
    accelerator.print(f"cached latents {tuple(lat_mean.shape)} of {len(ds.users)} users, scaling {scaling:.4f}")

    # ---- model, noise schedule, the shared loop (optimiser, EMA, resume, logs) -------------------------------------
    model = Denoiser(preset, ds.users, in_channels=ae.latent_channels(vae)).to(device)
    null_user = model.user_encoder.null_index
    noise_sched = DDPMScheduler(**preset.scheduler_config())
    num_t = noise_sched.config.num_train_timesteps
    loop = Stage2Loop(cfg, accelerator, model, run_dir, ds)
    loop.attach(vae, "unet", noise_sched.config, preset, ds, norm, x, labels, route_of(vae, loop.shadow.unet))

    # ---- train -----------------------------------------------------------------------------------------
    for step in loop.steps():
        gen = step_generator(cfg.seed, step, rank)
        idx = draw_batch(len(x), cfg.batch_size, gen)
        b = len(idx)
        s = torch.randint(0, len(shifts), (b,), generator=gen)
        eps_lat = torch.randn((b, *lat_mean.shape[2:]), generator=gen)
        z0 = ae.scale(vae, lat_mean[s, idx] + lat_std[s, idx] * eps_lat)  # (B, 4, h, w): a posterior sample
        user = labels[idx].clone()
        user[torch.rand(b, generator=gen) < cfg.null_user_prob] = null_user  # classifier-free guidance dropout
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, num_t, (b,), generator=gen)
        z0, noise, t, user = z0.to(device), noise.to(device), t.to(device), user.to(device)
        z_t, target = noised(noise_sched, z0, noise, t)
        loop.set_lr(step)
        with accelerator.autocast():
            pred = loop.model(z_t, t, user)
        loop.update(latent_loss(noise_sched, pred, target, t, cfg.snr_gamma).mean(), step, b)  # Min-SNR if gamma > 0

    # ---- export the pipeline folder (EMA weights) -----------------------------------------------------------
    return loop.export(out, "train-unet (Min-SNR weighted)" if cfg.snr_gamma else "train-unet",
                       f"{cfg.num_inference_steps} DPM-Solver++ steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, UNetConfig)


def run(args: argparse.Namespace) -> int:
    return run_stage("unet", args, main, "data", "out", "vae")
