"""Enrolment: a new person from a few recordings, by learning only their user-encoder rows (textual inversion;
Gal et al., ICLR 2023) with the stage-2 loss while the autoencoder and the denoiser stay frozen.

Used by the evaluator's few-shot augmentation protocol (training/eval/augmentation.py) and by enrolment of new users.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, VQDiffusionScheduler

from models import autoencoder as ae
from models.losses import cache_codes, cache_latents, code_loss, corrupt, latent_loss, noised, time_shifts
from models.pipeline import DopplerPipeline
from models.user_encoder import UserEncoder

# loss(idx, context, generator) -> scalar: the stage-2 loss on the cached recordings `idx` under user tokens `context`.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class FewShotConfig:
    steps: int = 300  # optimiser steps on the new rows (all target users at once; rows do not interact)
    batch_size: int = 16  # latents per step
    lr: float = 5e-3  # Adam on the embedding rows; LayerNorm after them makes the scale forgiving
    time_shifts: int = 8  # circularly time-shifted copies of each recording (gait is periodic), as in training
    seed: int = 0


def _latent_loss(pipe: DopplerPipeline, x_db: torch.Tensor, cfg: FewShotConfig) -> LossFn:
    """The stage-2 diffusion loss of the UNet routes (kl, vq-latent) on the recordings' cached latents."""
    x = pipe.normalization.to_model(x_db.float())  # (N, C, H, W)
    mean, std = cache_latents(pipe.vae, x, time_shifts(x.shape[-1], cfg.time_shifts))  # (S, N, 4, h, w)
    mean = ae.scale(pipe.vae, mean.flatten(0, 1))  # (S * N, 4, h, w), shift-major like the labels' np.tile
    std = std.flatten(0, 1) * float(pipe.vae.config.scaling_factor)
    sched = DDPMScheduler.from_config(pipe.scheduler_config)
    device = pipe.device

    def loss(idx: torch.Tensor, context: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)).to(device)  # a posterior sample
        noise = torch.randn(z0.shape, generator=g).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g).to(device)
        z_t, target = noised(sched, z0, noise, t)
        return latent_loss(sched, pipe.denoiser(z_t, t, encoder_hidden_states=context).sample, target, t).mean()

    return loss


def _code_loss(pipe: DopplerPipeline, x_db: torch.Tensor, cfg: FewShotConfig) -> LossFn:
    """The VQ-Diffusion x_0 cross-entropy (route vq-diffusion) on the recordings' cached code grids."""
    x = pipe.normalization.to_model(x_db)
    codes = cache_codes(pipe.vae, x, time_shifts(x.shape[-1], cfg.time_shifts))
    codes = codes.reshape(-1, codes.shape[-1])  # (shifts * N, L), shift-major like the labels' np.tile
    sched = VQDiffusionScheduler.from_config(pipe.scheduler_config)

    def loss(idx: torch.Tensor, context: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        t = int(torch.randint(0, sched.config.num_train_timesteps, (1,), generator=g))  # AdaLayerNorm: one t per call
        x0 = codes[idx]
        x_t = corrupt(sched, x0, t, g).to(pipe.device)
        log_p = pipe.denoiser(x_t, encoder_hidden_states=context, timestep=torch.tensor(t, device=pipe.device)).sample
        return code_loss(log_p, x0.to(pipe.device))

    return loss


def adapt_new_users(pop_pipe: Any, x_db: np.ndarray, labels: np.ndarray, users: list[str],
                    cfg: FewShotConfig | None = None) -> tuple[Any, dict[str, Any]]:
    """A pipeline for `users` from a population pipeline: frozen VAE + UNet, new user rows learnt from x_db only.

    New rows start at the mean of the population's user rows; the null row (classifier-free guidance)
    and the token positions are copied and stay fixed. Returns the pipeline and a training log.
    """
    cfg = cfg or FewShotConfig()
    labels = np.asarray(labels, np.int64)
    if len(labels) != len(x_db) or labels.min() < 0 or labels.max() >= len(users):
        raise ValueError("labels must index `users` and match x_db")
    old = pop_pipe.user_encoder
    enc = UserEncoder(users=list(users), cross_attention_dim=old.config.cross_attention_dim,
                      num_tokens=old.config.num_tokens)
    g = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        pop_rows = old.embedding.weight[: old.null_index].float().cpu()
        start = pop_rows.mean(0, keepdim=True) + 0.1 * pop_rows.std(0, keepdim=True) * torch.randn(
            len(users), pop_rows.shape[1], generator=g)
        enc.embedding.weight.copy_(torch.cat([start, old.embedding.weight[old.null_index:].float().cpu()]))
        enc.position.copy_(old.position.float().cpu())
        enc.norm.load_state_dict({k: v.float().cpu() for k, v in old.norm.state_dict().items()})
    pipe = DopplerPipeline(vae=pop_pipe.vae, denoiser=pop_pipe.denoiser, user_encoder=enc,
                           scheduler_config=dict(pop_pipe.scheduler_config), meta=dict(pop_pipe.meta))
    device = pop_pipe.device
    pipe.to(device, torch.float32)
    enc.requires_grad_(False)
    enc.embedding.weight.requires_grad_(True)
    row_mask = torch.ones(enc.embedding.weight.shape[0], 1, device=device)
    row_mask[enc.null_index] = 0.0  # the null user stays the population's

    x_db = torch.as_tensor(np.asarray(x_db, np.float32))
    lat_labels = torch.as_tensor(np.tile(labels, cfg.time_shifts))
    loss_fn = (_code_loss if pipe.route == "vq-diffusion" else _latent_loss)(pipe, x_db, cfg)
    opt = torch.optim.Adam([enc.embedding.weight], lr=cfg.lr)
    losses = []
    enc.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(lat_labels), (cfg.batch_size,), generator=g)
        loss = loss_fn(idx, enc(lat_labels[idx].to(device)), g)  # context: (B, T, D)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        enc.embedding.weight.grad.mul_(row_mask)
        opt.step()
        losses.append(loss.item())
    pipe.to(device, torch.float32)  # back to eval mode, no grads
    pipe.meta = {**pipe.meta, "fewshot": dict(asdict(cfg), users=list(users), n_recordings=int(len(x_db)))}
    tail = losses[-max(1, len(losses) // 10):]
    return pipe, dict(loss_first=losses[0] if losses else math.nan, loss_last=float(np.mean(tail)) if tail else math.nan)
