"""Stage 2 of the discrete route (vq-diffusion): VQ-Diffusion over the code indices of a frozen VQModel.

Gu et al. 2022: a Transformer2DModel reads the corrupted code grid x_t (mask-and-replace forward process of
diffusers' VQDiffusionScheduler) and the user tokens through cross-attention, and predicts log p(x_0 | x_t).
We train it with the cross-entropy of x_0 (VQ-Diffusion's auxiliary x_0 loss; the paper adds the variational
bound on top), with the null user dropped in for classifier-free guidance as on the main route.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from models import autoencoder as ae
from models.builders import build_transformer, build_user_encoder, build_vq_scheduler
from models.losses import cache_codes, code_loss, corrupt, time_shifts
from models.normalization import Normalization
from models.presets import Preset, get_preset
from training.cli_types import add_threads_argument, set_threads
from training.config import ConfigError, VQDConfig, add_config_arguments, run_stage
from training.stages.export import PipelineExport
from training.stages.loop import TrainLoop, load_frozen_autoencoder, load_split, start_run


class CodeDenoiser(nn.Module):
    """Transformer + user encoder as one module (one DDP wrapper, one optimiser, one EMA).

    diffusers' AdaLayerNorm takes a single timestep per call, so the batch arrives in groups that each share
    one timestep; looping inside forward() keeps it one DDP forward per step.
    """

    def __init__(self, preset: Preset, users: list[str]):
        super().__init__()
        self.transformer = build_transformer(preset)
        self.user_encoder = build_user_encoder(preset, users)

    def forward(self, codes_t: torch.Tensor, t: torch.Tensor, user_idx: torch.Tensor,
                groups: int) -> torch.Tensor:
        context = self.user_encoder(user_idx)  # (B, T, D)
        outs = [self.transformer(c, encoder_hidden_states=e, timestep=tg).sample
                for c, e, tg in zip(codes_t.chunk(groups), context.chunk(groups), t, strict=True)]
        return torch.cat(outs)  # (B, K, L) log-probabilities of x_0


def main(cfg: VQDConfig) -> Path:
    """Train the VQ-Diffusion stage and export a vq-diffusion pipeline folder to cfg.out."""
    # ---- setup ---------------------------------------------------------------------------------------
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.with_name(out.name + "-run")
    accelerator = start_run(cfg, run_dir)
    device = accelerator.device
    if cfg.batch_size % cfg.t_groups:
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of t_groups {cfg.t_groups}")

    # ---- data: frozen VQModel, codes cached in memory -------------------------------------------------
    preset = get_preset(cfg.preset, channels=cfg.channels)
    x, labels, ds = load_split(cfg.data, "train", cfg.channels, preset.image_size)  # (N, C, H, W)
    norm = Normalization.from_meta(ds.meta)
    vq = load_frozen_autoencoder(cfg, preset, device, accelerator.print)
    if not ae.is_vq(vq):
        raise ConfigError(f"{cfg.vae} is an AutoencoderKL; train-transformer needs a VQModel (train-vae "
                          "--autoencoder vq)")
    w = x.shape[-1]
    shifts = time_shifts(w, cfg.latent_shifts) if cfg.time_shift else [0]
    codes = cache_codes(vq, x, shifts)  # (S, N, L)
    usage = ae.codebook_usage(codes[0], preset.vq_num_embeddings)
    accelerator.print(f"cached codes {tuple(codes.shape)} of {len(ds.users)} users; codebook perplexity "
                      f"{usage['perplexity']:.1f}, {100 * usage['dead_fraction']:.1f}% of codes unused")

    # ---- model, schedule, the shared loop (optimiser, EMA, resume, logs) -----------------------------------
    model = CodeDenoiser(preset, ds.users).to(device)
    null_user = model.user_encoder.null_index
    sched = build_vq_scheduler(preset)
    num_t = sched.config.num_train_timesteps
    loop = TrainLoop(cfg, accelerator, model, run_dir, ds)
    exporter = PipelineExport.attach(loop, vae=vq, network="transformer", scheduler_config=sched.config,
                                     preset=preset, ds=ds, norm=norm, x=x, labels=labels,
                                     route="vq-diffusion")
    exporter.pipe.meta["training"]["codebook"] = usage

    # ---- train -----------------------------------------------------------------------------------------
    for step in loop.steps():
        gen, idx = loop.draw(step, len(x))  # this step's generator and batch indices
        b = len(idx)
        s = torch.randint(0, len(shifts), (b,), generator=gen)
        x0 = codes[s, idx]  # (B, L)
        user = labels[idx].clone()
        # classifier-free guidance dropout
        user[torch.rand(b, generator=gen) < cfg.null_user_prob] = null_user
        t = torch.randint(0, num_t, (cfg.t_groups,), generator=gen)  # one timestep per group
        x_t = torch.cat([corrupt(sched, g, int(tg), gen)
                         for g, tg in zip(x0.chunk(cfg.t_groups), t, strict=True)])
        x0, x_t, t, user = x0.to(device), x_t.to(device), t.to(device), user.to(device)
        loop.set_lr(step)
        with accelerator.autocast():
            log_p = loop.model(x_t, t, user, cfg.t_groups)  # (B, K, L)
        loop.update(code_loss(log_p, x0), step, b)  # cross-entropy of x_0 over every code position

    # ---- export the pipeline folder (EMA weights) ----------------------------------------------------------
    return exporter.export(out, loss_title="train-transformer (x_0 cross-entropy)",
                           sampler_text=f"{cfg.num_inference_steps} VQ-Diffusion steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, VQDConfig)
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    return run_stage("transformer", args, main, "data", "out", "vae")
