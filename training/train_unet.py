"""Stage 2: user-conditioned latent diffusion on frozen-autoencoder latents; exports the pipeline folder (EMA weights).

With an AutoencoderKL this is the main route (kl); with a VQModel it is the LDM "VQ-reg" variant (vq-latent):
the same UNet on the scaled pre-quantisation latents, quantised by the decoder at sampling time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from torch import nn

from models import autoencoder as ae
from models.builders import build_unet, build_user_encoder
from models.normalization import Normalization
from models.pipeline import route_of
from models.presets import Preset, get_preset
from training import common
from training.config import UNetConfig, add_config_arguments, run_stage
from training.stage2 import Stage2Loop, load_frozen_autoencoder


class Denoiser(nn.Module):
    """UNet + user encoder as one module: one DDP wrapper, one optimiser, one EMA."""

    def __init__(self, preset: Preset, users: list[str], in_channels: int | None = None):
        super().__init__()
        self.unet = build_unet(preset, in_channels=in_channels)
        self.user_encoder = build_user_encoder(preset, users)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, user_idx: torch.Tensor) -> torch.Tensor:
        return self.unet(z_t, t, encoder_hidden_states=self.user_encoder(user_idx)).sample  # (N, 4, h, w)


@torch.no_grad()
def cache_latents(vae: ae.Autoencoder, x: torch.Tensor, shifts: list[int], batch: int = 64):
    """Latent mean and std of every image at every circular time shift: (S, N, C, h, w) each, on the CPU (unscaled;
    a VQ encoder is deterministic, so its std is zero)."""
    means, stds = [], []
    for s in shifts:
        xs = torch.roll(x, shifts=s, dims=-1)
        m, d = zip(*(ae.posterior(vae, xs[i:i + batch]) for i in range(0, len(xs), batch)), strict=True)
        means.append(torch.cat(m).float().cpu())
        stds.append(torch.cat(d).float().cpu())
    return torch.stack(means), torch.stack(stds)


def main(cfg: UNetConfig) -> Path:
    """Train stage 2 and export the pipeline folder to cfg.out."""
    # ---- setup ---------------------------------------------------------------------------------------
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.with_name(out.name + "-run")
    accelerator = common.start_run(cfg, run_dir)
    device, rank = accelerator.device, accelerator.process_index

    # ---- data: frozen VAE, latents cached in memory ----------------------------------------------------
    preset = get_preset(cfg.preset, channels=cfg.channels)
    if cfg.prediction_type:
        preset = preset.with_overrides(prediction_type=cfg.prediction_type)
    x, labels, ds = common.load_split(cfg.data, "train", cfg.channels, preset.image_size)  # (N, C, H, W)
    norm = Normalization(dyn_range_db=float(ds.meta.get("dyn_range_db", 60.0)))
    vae = load_frozen_autoencoder(cfg, preset, device, accelerator.print)
    scaling = float(vae.config.scaling_factor)
    w = x.shape[-1]
    shifts = [round(i * w / cfg.latent_shifts) for i in range(cfg.latent_shifts)] if cfg.time_shift else [0]
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
        gen = common.step_generator(cfg.seed, step, rank)
        idx = common.draw_batch(len(x), cfg.batch_size, gen)
        b = len(idx)
        s = torch.randint(0, len(shifts), (b,), generator=gen)
        eps_lat = torch.randn((b, *lat_mean.shape[2:]), generator=gen)
        z0 = ae.scale(vae, lat_mean[s, idx] + lat_std[s, idx] * eps_lat)  # (B, 4, h, w): a posterior sample
        user = labels[idx].clone()
        user[torch.rand(b, generator=gen) < cfg.null_user_prob] = null_user  # classifier-free guidance dropout
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, num_t, (b,), generator=gen)
        z0, noise, t, user = z0.to(device), noise.to(device), t.to(device), user.to(device)
        z_t = noise_sched.add_noise(z0, noise, t)
        v_pred = noise_sched.config.prediction_type == "v_prediction"
        target = noise_sched.get_velocity(z0, noise, t) if v_pred else noise
        loop.set_lr(step)
        with accelerator.autocast():
            pred = loop.model(z_t, t, user)
        per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
        if cfg.snr_gamma > 0:
            # Min-SNR-gamma (Hang et al. 2023): cap the weight of easy, low-noise steps; v-target divides by snr+1.
            snr = compute_snr(noise_sched, t)
            per_sample = per_sample * snr.clamp(max=cfg.snr_gamma) / (snr + 1 if v_pred else snr)
        loop.update(per_sample.mean(), step, b)

    # ---- export the pipeline folder (EMA weights) -----------------------------------------------------------
    return loop.export(out, "train-unet (Min-SNR weighted)" if cfg.snr_gamma else "train-unet",
                       f"{cfg.num_inference_steps} DPM-Solver++ steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, UNetConfig)


def run(args: argparse.Namespace) -> int:
    return run_stage("unet", args, main, "data", "out", "vae")
