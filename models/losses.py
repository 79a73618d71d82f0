"""What stage 2 optimises, shared by its two trainers and by enrolment (offline and in the service): the
stage-1 encoding of every recording at circular time shifts (cached once, gait is periodic), and the loss of
each route.

- kl / vq-latent: DDPM's denoising loss on scaled latents (Ho et al. 2020), epsilon or v target (Salimans & Ho
  2022) as the scheduler config says, optionally Min-SNR-gamma weighted (Hang et al. 2023);
- vq-diffusion: the x_0 cross-entropy of VQ-Diffusion (Gu et al. 2022) on code grids corrupted by its
  mask-and-replace forward process.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, VQDiffusionScheduler
from diffusers.training_utils import compute_snr
from torch.nn import functional as F

from models import autoencoder as ae


def time_shifts(width: int, n: int) -> list[int]:
    """n circular shifts spread evenly over an image `width` frames wide (0 first)."""
    return [round(i * width / n) for i in range(n)]


# ---- caches: the frozen stage 1 runs once per recording and shift ------------------------------------------
@torch.no_grad()
def cache_latents(vae: ae.Autoencoder, x: torch.Tensor, shifts: list[int], batch: int = 64
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent mean and std of every image at every circular time shift: (S, N, C, h, w) each, on the CPU
    (unscaled; a VQ encoder is deterministic, so its std is zero)."""
    means, stds = [], []
    for s in shifts:
        xs = torch.roll(x, shifts=s, dims=-1)
        m, d = zip(*(ae.posterior(vae, xs[i:i + batch]) for i in range(0, len(xs), batch)), strict=True)
        means.append(torch.cat(m).float().cpu())
        stds.append(torch.cat(d).float().cpu())
    return torch.stack(means), torch.stack(stds)


@torch.no_grad()
def cache_codes(vq: ae.Autoencoder, x: torch.Tensor, shifts: list[int], batch: int = 64) -> torch.Tensor:
    """Code indices of every image at every circular time shift: (S, N, L) long, on the CPU."""
    return torch.stack([torch.cat([ae.encode_codes(vq, torch.roll(x, s, dims=-1)[i:i + batch]).cpu()
                                   for i in range(0, len(x), batch)]) for s in shifts])


# ---- latent diffusion (kl, vq-latent) ----------------------------------------------------------------------
def noised(sched: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward process z_t ~ q(z_t | z_0) and the regression target: v for v_prediction, else the
    noise."""
    z_t = sched.add_noise(z0, noise, t)
    v_pred = sched.config.prediction_type == "v_prediction"
    return z_t, (sched.get_velocity(z0, noise, t) if v_pred else noise)


def latent_loss(sched: DDPMScheduler, pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
                snr_gamma: float = 0.0) -> torch.Tensor:
    """Per-sample mean squared error (B,); snr_gamma > 0 caps the weight of easy, low-noise steps
    (Min-SNR-gamma; the v target divides by snr + 1)."""
    per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
    if snr_gamma > 0:
        snr = compute_snr(sched, t)
        v_pred = sched.config.prediction_type == "v_prediction"
        per_sample = per_sample * snr.clamp(max=snr_gamma) / (snr + 1 if v_pred else snr)
    return per_sample


# ---- discrete diffusion over code indices (vq-diffusion) ---------------------------------------------------
def corrupt(sched: VQDiffusionScheduler, x0: torch.Tensor, t: int, gen: torch.Generator) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0): keep with prob a_t, a uniformly random code with K*b_t, [MASK] with c_t."""
    k = sched.num_embed - 1
    c = float(sched.log_cumprod_ct[t].exp())
    b = float(sched.log_cumprod_bt[t].exp())
    u = torch.rand(x0.shape, generator=gen)
    rand_codes = torch.randint(0, k, x0.shape, generator=gen)
    out = torch.where(u < c + k * b, rand_codes, x0)
    return torch.where(u < c, torch.full_like(x0, sched.mask_class), out)


def code_loss(log_p: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of x_0 over every code position, from log-probabilities (B, K, L) and codes (B, L)."""
    return F.nll_loss(log_p.float(), x0)
