"""The one sampler: classifier-free guided latent diffusion, shared by training previews, evaluation, export and the service."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from models.pipeline import DopplerPipeline

SCHEDULERS = ("ddpm", "ddim", "dpmsolver++")


def make_scheduler(name: str, scheduler_config: dict) -> SchedulerMixin:
    """Build an inference scheduler from the training DDPM config (same betas, same prediction type)."""
    if name == "ddpm":
        return DDPMScheduler.from_config(scheduler_config)
    if name == "ddim":
        return DDIMScheduler.from_config(scheduler_config)
    if name == "dpmsolver++":
        # DPM-Solver++(2M), Lu et al. 2022: deterministic, good quality in 10-25 steps.
        return DPMSolverMultistepScheduler.from_config(scheduler_config, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULERS)}")


def initial_latents(seeds: Sequence[int], shape: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """One CPU generator per sample, so each sample's noise depends only on its own seed."""
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]), gens  # (N, C, h, w)


@torch.no_grad()
def sample(
    pipe: DopplerPipeline,
    user_indices: Sequence[int],
    seeds: Sequence[int],
    num_inference_steps: int = 20,
    guidance_scale: float = 2.0,
    scheduler: str = "dpmsolver++",
    pad_to: int | None = None,
) -> torch.Tensor:
    """Classifier-free guided sampling (Ho & Salimans 2022) in the VAE latent space; returns (N, C, H, W) dB on the CPU.

    `pad_to` runs the networks at a fixed batch size (padding with null-user rows that are thrown away).
    BLAS and oneDNN pick kernels by batch size, so without it a sample can differ in the last bits
    between a batch of 1 and a batch of 16; at a fixed shape each row is computed identically wherever
    it sits, which makes samples bitwise batch-invariant on the CPU.
    """
    if len(user_indices) != len(seeds):
        raise ValueError(f"got {len(user_indices)} user indices but {len(seeds)} seeds")
    if len(seeds) == 0:
        raise ValueError("nothing to sample")
    if num_inference_steps < 1:
        raise ValueError("num_inference_steps must be >= 1")
    n_real = len(seeds)
    if pad_to is not None and pad_to > n_real:
        user_indices = list(user_indices) + [pipe.user_encoder.null_index] * (pad_to - n_real)
        seeds = list(seeds) + [0] * (pad_to - n_real)
    device, dtype = pipe.device, pipe.dtype
    sched = make_scheduler(scheduler, pipe.scheduler_config)
    sched.set_timesteps(num_inference_steps, device=device)

    latents, gens = initial_latents(seeds, pipe.latent_shape)
    latents = (latents * sched.init_noise_sigma).to(device=device, dtype=dtype)  # (N, 4, h, w)

    idx = torch.as_tensor(list(user_indices), dtype=torch.long, device=device)
    if idx.min() < 0 or idx.max() > pipe.user_encoder.null_index:
        raise ValueError("user index out of range")
    use_cfg = guidance_scale != 1.0
    if use_cfg:
        null = torch.full_like(idx, pipe.user_encoder.null_index)
        context = pipe.user_encoder(torch.cat([null, idx]))  # (2N, T, D): unconditional first
    else:
        context = pipe.user_encoder(idx)  # (N, T, D)

    for t in sched.timesteps:
        model_in = torch.cat([latents, latents]) if use_cfg else latents
        model_in = sched.scale_model_input(model_in, t)
        out = pipe.unet(model_in, t, encoder_hidden_states=context).sample
        if use_cfg:
            uncond, cond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        # Stochastic schedulers (DDPM) draw their noise from each sample's own generator.
        latents = sched.step(out, t, latents, generator=gens).prev_sample

    vae = pipe.vae
    shift = vae.config.shift_factor or 0.0
    z = latents.to(torch.float32) / vae.config.scaling_factor + shift
    x = vae.decode(z).sample  # (N, C, H, W) in model space
    return pipe.normalization.to_db(x[:n_real].float().cpu())
