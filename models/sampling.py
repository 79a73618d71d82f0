"""The one sampler: classifier-free guided latent diffusion, shared by training previews, evaluation, export and the service.

`sample()` serves all three pipeline routes: continuous latent diffusion (kl, vq-latent) with the DDPM /
DDIM / DPM-Solver++ schedulers, and discrete diffusion over VQ code indices (vq-diffusion) with a
VQDiffusionScheduler respaced to the requested number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, VQDiffusionScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from models import autoencoder as ae
from models.pipeline import DopplerPipeline

SCHEDULERS = ("ddpm", "ddim", "dpmsolver++", "vq-diffusion")
CONTINUOUS_SCHEDULERS = SCHEDULERS[:3]
# What each pipeline route can sample with; the last entry is the route's default.
SAMPLERS_BY_ROUTE = {
    "kl": CONTINUOUS_SCHEDULERS, "vq-latent": CONTINUOUS_SCHEDULERS, "vq-diffusion": ("vq-diffusion",),
}
# The sampling defaults everyone shares (service, generate, evaluate, training previews); a pipeline's
# dopplergen.json may override them (num_inference_steps, guidance_scale, scheduler).
DEFAULT_STEPS = 20  # DPM-Solver++(2M) is near converged at 20 steps on the demo checkpoint
DEFAULT_GUIDANCE = 2.0  # classifier-free guidance scale the demo checkpoint was evaluated at
DEFAULT_SAMPLER = "dpmsolver++"  # DPM-Solver++(2M), for the continuous routes
assert SAMPLERS_BY_ROUTE["kl"][-1] == DEFAULT_SAMPLER


def default_sampler(route: str) -> str:
    """The sampler a route uses when none is asked for (DPM-Solver++ on kl / vq-latent, vq-diffusion otherwise)."""
    return SAMPLERS_BY_ROUTE[route][-1]


def make_scheduler(name: str, scheduler_config: dict) -> SchedulerMixin:
    """Build an inference scheduler from the training DDPM config (same betas, same prediction type)."""
    if name == "vq-diffusion" or scheduler_config.get("_class_name") == "VQDiffusionScheduler":
        raise ValueError("the vq-diffusion scheduler only samples code indices; use respaced_vq_scheduler()")
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


def scheduler_for(pipe: DopplerPipeline, name: str | None) -> str:
    """Check a requested scheduler against the pipeline's route; None picks the route's own."""
    allowed = SAMPLERS_BY_ROUTE[pipe.route]
    name = name or default_sampler(pipe.route)
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {list(allowed)}")
    if name not in allowed:
        raise ValueError(f"scheduler {name!r} does not apply to a {pipe.route} pipeline; choose one of {list(allowed)}")
    return name


def respaced_vq_scheduler(scheduler_config: dict, num_inference_steps: int) -> tuple[VQDiffusionScheduler, list[int]]:
    """A VQDiffusionScheduler that jumps between `num_inference_steps` of the trained timesteps.

    The mask-and-replace process composes in closed form: from trained step s to t > s, a token survives with
    probability att[t]/att[s] and stays unmasked with (1-ctt[t])/(1-ctt[s]) (Gu et al. 2022, Sec. 4.1; the
    "fast inference" of their Sec. 4.5 and Improved DDPM's respacing). Writing those into the single-step
    tables makes diffusers' own posterior q(x_s | x_t, x_0) exact for the jump. Returns the scheduler (its
    index i runs over the kept steps) and the trained timestep each index stands for (what the model sees).
    """
    sched = VQDiffusionScheduler.from_config(scheduler_config)
    T = int(sched.config.num_train_timesteps)
    n = int(num_inference_steps)
    if not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be in 1..{T} (the trained vq-diffusion timesteps), got {n}")
    kept = sorted({int(round(v)) for v in np.linspace(0, T - 1, n)})  # includes 0 and T-1
    if n < T:
        k = sched.num_embed - 1  # non-mask classes
        att = sched.log_cumprod_at.double().exp().numpy()[kept]
        ctt = sched.log_cumprod_ct.double().exp().numpy()[kept]
        prev_att = np.concatenate(([1.0], att[:-1]))
        prev_ctt = np.concatenate(([0.0], ctt[:-1]))
        at = att / prev_att
        ct = 1.0 - (1.0 - ctt) / (1.0 - prev_ctt)
        bt = (1.0 - at - ct) / k
        btt = (1.0 - att - ctt) / k
        f32 = lambda a: torch.log(torch.as_tensor(a, dtype=torch.float64)).float()  # noqa: E731
        sched.log_at, sched.log_bt, sched.log_ct = f32(at), f32(bt), f32(ct)
        # cumulative tables keep their trailing "t = -1" entry (identity), as diffusers builds them
        sched.log_cumprod_at = torch.cat([f32(att), sched.log_cumprod_at[-1:]])
        sched.log_cumprod_bt = torch.cat([f32(btt), sched.log_cumprod_bt[-1:]])
        sched.log_cumprod_ct = torch.cat([f32(ctt), sched.log_cumprod_ct[-1:]])
    sched.set_timesteps(len(kept))
    return sched, kept


def _check_request(pipe: DopplerPipeline, user_indices, seeds, num_inference_steps, pad_to):
    if len(user_indices) != len(seeds):
        raise ValueError(f"got {len(user_indices)} user indices but {len(seeds)} seeds")
    if len(seeds) == 0:
        raise ValueError("nothing to sample")
    if num_inference_steps < 1:
        raise ValueError("num_inference_steps must be >= 1")
    if pad_to is not None and pad_to > len(seeds):
        user_indices = list(user_indices) + [pipe.user_encoder.null_index] * (pad_to - len(seeds))
        seeds = list(seeds) + [0] * (pad_to - len(seeds))
    idx = torch.as_tensor(list(user_indices), dtype=torch.long, device=pipe.device)
    if idx.min() < 0 or idx.max() > pipe.user_encoder.null_index:
        raise ValueError("user index out of range")
    return idx, list(seeds)


def _context(pipe: DopplerPipeline, idx: torch.Tensor, use_cfg: bool, conditions: torch.Tensor | None = None
             ) -> torch.Tensor:
    """User tokens (+ condition tokens when the pipeline has them); the unconditional branch is the null user with
    every condition absent."""
    if conditions is not None and len(conditions) < len(idx):  # padding rows: conditions absent
        pad = torch.full((len(idx) - len(conditions), conditions.shape[1]), float("nan"))
        conditions = torch.cat([conditions.float().cpu(), pad])
    if use_cfg:
        null = torch.full_like(idx, pipe.user_encoder.null_index)
        values = None if conditions is None else torch.cat([torch.full_like(conditions, float("nan")), conditions])
        return pipe.encode_context(torch.cat([null, idx]), values)  # (2N, T, D): unconditional first
    return pipe.encode_context(idx, conditions)  # (N, T, D)


@torch.no_grad()
def sample(
    pipe: DopplerPipeline,
    user_indices: Sequence[int],
    seeds: Sequence[int],
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    scheduler: str | None = None,
    pad_to: int | None = None,
    conditions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Classifier-free guided sampling (Ho & Salimans 2022) in the stage-1 latent space; returns (N, C, H, W) dB on the CPU.

    `scheduler=None` picks the route's own (DPM-Solver++ for kl and vq-latent, vq-diffusion for vq-diffusion).
    `pad_to` runs the networks at a fixed batch size (padding with null-user rows that are thrown away).
    BLAS and oneDNN pick kernels by batch size, so without it a sample can differ in the last bits
    between a batch of 1 and a batch of 16; at a fixed shape each row is computed identically wherever
    it sits, which makes samples bitwise batch-invariant on the CPU.
    `conditions` (N, K): each row's condition values (`pipe.condition_encoder.values_tensor`), NaN = absent;
    None = all absent (and no extra tokens at all for a pipeline without a condition encoder).
    """
    scheduler = scheduler_for(pipe, scheduler)
    n_real = len(seeds)
    idx, seeds = _check_request(pipe, user_indices, seeds, num_inference_steps, pad_to)
    use_cfg = guidance_scale != 1.0
    if conditions is not None and (pipe.condition_encoder is None or len(conditions) != n_real):
        raise ValueError("conditions need a pipeline with a condition encoder and one row per sample")
    context = _context(pipe, idx, use_cfg, conditions)
    if scheduler == "vq-diffusion":
        x = _sample_codes(pipe, context, seeds, num_inference_steps, guidance_scale, use_cfg)
    else:
        x = _sample_latents(pipe, context, seeds, num_inference_steps, guidance_scale, use_cfg, scheduler)
    return pipe.normalization.to_db(x[:n_real].float().cpu())


def _sample_latents(pipe, context, seeds, num_inference_steps, guidance_scale, use_cfg, scheduler) -> torch.Tensor:
    """Continuous latent diffusion (routes kl and vq-latent); returns images in model space."""
    device, dtype = pipe.device, pipe.dtype
    sched = make_scheduler(scheduler, pipe.scheduler_config)
    sched.set_timesteps(num_inference_steps, device=device)
    latents, gens = initial_latents(seeds, pipe.latent_shape)
    latents = (latents * sched.init_noise_sigma).to(device=device, dtype=dtype)  # (N, 4, h, w)
    for t in sched.timesteps:
        model_in = torch.cat([latents, latents]) if use_cfg else latents
        model_in = sched.scale_model_input(model_in, t)
        out = pipe.denoiser(model_in, t, encoder_hidden_states=context).sample
        if use_cfg:
            uncond, cond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        # Stochastic schedulers (DDPM) draw their noise from each sample's own generator.
        latents = sched.step(out, t, latents, generator=gens).prev_sample
    return ae.decode_latents(pipe.vae, latents.to(torch.float32))  # (N, C, H, W)


def _sample_codes(pipe, context, seeds, num_inference_steps, guidance_scale, use_cfg) -> torch.Tensor:
    """Discrete diffusion over code indices (route vq-diffusion), from all-[MASK]; returns images in model space.

    Follows diffusers' VQDiffusionPipeline (guided log-probabilities renormalised, clamped at -70) but draws
    each sample's Gumbel noise from its own generator, so a sample depends only on its seed.
    """
    device = pipe.device
    sched, model_t = respaced_vq_scheduler(pipe.scheduler_config, num_inference_steps)
    sched.set_timesteps(len(model_t), device=device)
    n, (_, h, w) = len(seeds), pipe.latent_shape
    codes = torch.full((n, h * w), sched.mask_class, dtype=torch.long, device=device)
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    for i in sched.timesteps.tolist():
        model_in = torch.cat([codes, codes]) if use_cfg else codes
        t = torch.tensor(model_t[i], dtype=torch.long, device=device)  # one scalar: diffusers' AdaLayerNorm needs it
        logp = pipe.denoiser(model_in, encoder_hidden_states=context, timestep=t).sample.float()  # (N, K, L)
        if use_cfg:
            uncond, cond = logp.chunk(2)
            logp = uncond + guidance_scale * (cond - uncond)
            logp = logp - torch.logsumexp(logp, dim=1, keepdim=True)
        logp = logp.clamp(-70)
        log_prev = logp if i == 0 else sched.q_posterior(logp, codes, i)  # (N, K or K+1, L)
        u = torch.stack([torch.rand(log_prev.shape[1:], generator=g) for g in gens]).to(device)
        codes = (log_prev - torch.log(-torch.log(u + 1e-30) + 1e-30)).argmax(dim=1)  # Gumbel-max draw
    return ae.decode_codes(pipe.vae, codes, (h, w))
