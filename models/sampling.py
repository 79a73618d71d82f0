"""The one sampler: classifier-free guided latent diffusion, shared by training previews, evaluation, export and the service.

A sample is a `Row` that carries everything of its own: conditioning tokens, noise generator, sampler state,
step count, position in its schedule and guidance scale. `step_rows()` advances any set of rows by one step
with one guided forward pass, whatever mix of timesteps, samplers and guidance they hold; the service's
step-level batcher calls it once per device step, and `sample()` is the same loop over rows that start
together. All three pipeline routes are served: continuous latent diffusion (kl, vq-latent) with the
per-row DDPM / DDIM / DPM-Solver++ of models.samplers, and discrete diffusion over VQ code indices
(vq-diffusion) with a VQDiffusionScheduler respaced to the requested number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models import autoencoder as ae
from models import samplers as S
from models.pipeline import DopplerPipeline
from models.samplers import respaced_vq_scheduler  # noqa: F401  (re-exported: tests and tools use it from here)

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
# Compositional guidance for pipelines with conditions (Liu et al. 2022, "Compositional Visual Generation"):
#     eps = eps(null, absent) + g (eps(user, absent) - eps(null, absent)) + g_c (eps(user, cond) - eps(user, absent))
# g pulls toward the person, g_c toward the requested speed and aspect. g_c = g (or None) is plain two-branch
# guidance, eps(null, absent) + g (eps(user, cond) - eps(null, absent)). Measured on the conditioned demo
# (experiments/condition_guidance.py): at g = g_c = 2 identity fell to 0.55 / 0.68 at a person's own slow / fast
# speeds; g = 3, g_c = 1 kept it at 0.90 / 0.91 with the torso line within 3.1%. Over the person's own drawn
# conditions, though, plain guidance 2 makes the more useful training data (TSTR 0.91x against 0.84x TRTR,
# experiments/guidance_tstr.py). Hence `guidance_for`: a request that names a condition is composed with the
# pipeline's identity_guidance_scale / condition_guidance_scale; one that leaves them all to be drawn is plain.
assert SAMPLERS_BY_ROUTE["kl"][-1] == DEFAULT_SAMPLER and set(CONTINUOUS_SCHEDULERS) == set(S.SAMPLER_NAMES)


def default_sampler(route: str) -> str:
    """The sampler a route uses when none is asked for (DPM-Solver++ on kl / vq-latent, vq-diffusion otherwise)."""
    return SAMPLERS_BY_ROUTE[route][-1]


def guidance_for(pipe: DopplerPipeline, guidance: float | None, condition_guidance: float | None,
                 named: bool) -> tuple[float, float | None]:
    """(g, g_c) to sample with; g_c None = plain guidance. Explicit values win over dopplergen.json's defaults.

    `named`: the request names a condition (speed_mps, ...) rather than leaving all to be drawn. A pipeline with
    conditions composes the guidance (module top) when a condition is named or `condition_guidance` is given:
    g = `guidance`, else "identity_guidance_scale", else "guidance_scale"; g_c = `condition_guidance`, else
    "condition_guidance_scale" (absent: plain). Otherwise g = `guidance`, else "guidance_scale", else 2.0.
    """
    meta = getattr(pipe, "meta", None) or {}
    plain = float(guidance if guidance is not None else meta.get("guidance_scale", DEFAULT_GUIDANCE))
    if getattr(pipe, "condition_encoder", None) is None or (condition_guidance is None and not named):
        return plain, None
    gc = condition_guidance if condition_guidance is not None else meta.get("condition_guidance_scale")
    if gc is None:
        return plain, None
    return float(guidance if guidance is not None else meta.get("identity_guidance_scale", plain)), float(gc)


def scheduler_for(pipe: DopplerPipeline, name: str | None) -> str:
    """Check a requested scheduler against the pipeline's route; None picks the route's own."""
    allowed = SAMPLERS_BY_ROUTE[pipe.route]
    name = name or default_sampler(pipe.route)
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {list(allowed)}")
    if name not in allowed:
        raise ValueError(f"scheduler {name!r} does not apply to a {pipe.route} pipeline; choose one of {list(allowed)}")
    return name


@dataclass(eq=False)
class Row:
    """One sample on its way: its own tokens, noise, sampler state, step count and guidance."""

    sampler: str
    steps: int
    guidance: float
    cond: torch.Tensor  # (T, D) the row's user (+ condition) tokens
    uncond: torch.Tensor  # (T, D) the null user with every condition absent, for classifier-free guidance
    gen: torch.Generator  # seeded once: the initial noise, then DDPM's or the Gumbel noise, step by step
    x: torch.Tensor  # (C, h, w) float32 latent, or (h*w,) long code indices on the vq-diffusion route
    # models.samplers.Schedule, or (respaced VQDiffusionScheduler, trained timesteps) on the vq-diffusion route
    schedule: S.Schedule | tuple
    i: int = 0  # steps taken
    x0_prev: torch.Tensor | None = None  # DPM-Solver++(2M)'s previous x0 estimate
    # Compositional guidance (see above): the row's user with every condition absent, and g_c. None = two-branch.
    mid: torch.Tensor | None = None
    condition_guidance: float | None = None
    user: int = -1  # the row's user index (the texture bank draws from that person's residuals); -1: none

    @property
    def done(self) -> bool:
        return self.i >= self.steps



def start_row(
    pipe: DopplerPipeline, user_index: int, seed: int, steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE,
    sampler: str | None = None, conditions: torch.Tensor | None = None, condition_guidance: float | None = None,
) -> Row:
    """A new row at step 0: the conditioning of `pipe.encode_context` and the seed's own initial noise.

    `conditions` (K,) are the row's condition values (NaN = absent), for pipelines with a condition encoder.
    `condition_guidance` (g_c) != `guidance` composes the guidance from three branches (see the module top);
    it applies only to a row with some condition present.
    """
    sampler = scheduler_for(pipe, sampler)
    if steps < 1:
        raise ValueError("num_inference_steps must be >= 1")
    if not 0 <= int(user_index) <= pipe.user_encoder.null_index:
        raise ValueError("user index out of range")
    if conditions is not None and pipe.condition_encoder is None:
        raise ValueError("conditions need a pipeline with a condition encoder")
    idx = torch.tensor([int(user_index), pipe.user_encoder.null_index], dtype=torch.long, device=pipe.device)
    values, mid = None, None
    if conditions is not None:
        values = torch.stack([conditions.float().cpu(), torch.full_like(conditions.float().cpu(), float("nan"))])
    cond, uncond = pipe.encode_context(idx, values)  # (T, D) each
    composed = (condition_guidance is not None and float(condition_guidance) != float(guidance)
                and conditions is not None and not bool(torch.isnan(conditions.float()).all()))
    if composed:
        mid = pipe.encode_context(idx[:1])[0]  # the user with every condition absent
    gen = torch.Generator("cpu").manual_seed(int(seed))
    if sampler == "vq-diffusion":
        plan = S.vq_schedule(pipe.scheduler_config, steps)
        _, h, w = pipe.latent_shape
        x = torch.full((h * w,), plan[0].mask_class, dtype=torch.long, device=pipe.device)
        steps = len(plan[1])
    else:
        plan = S.make_schedule(sampler, pipe.scheduler_config, steps)
        x = torch.randn(pipe.latent_shape, generator=gen).to(pipe.device)  # init_noise_sigma is 1 for all three
    return Row(sampler, int(steps), float(guidance), cond, uncond, gen, x, plan, mid=mid,
               condition_guidance=float(condition_guidance) if composed else None, user=int(user_index))


@torch.no_grad()
def step_rows(
    pipe: DopplerPipeline, rows: Sequence[Row], pad_to: int | None = None, cfg: bool | None = None,
    denoiser: torch.nn.Module | None = None,
) -> None:
    """Advance every row by one step of its own schedule, in place, with one guided forward pass.

    `pad_to` runs the network at a fixed batch (padding rows are thrown away): BLAS and oneDNN pick kernels
    by batch size, so only at a fixed shape is each row computed bit for bit the same wherever it sits.
    `cfg=None` runs the unconditional half only when some row has guidance != 1, and the user-without-conditions
    third only when some row composes its guidance; True always runs the unconditional half, and the third
    too on a pipeline with conditions (a fixed shape again). `denoiser` replaces pipe.denoiser (e.g. a compiled one).
    """
    if not rows:
        return
    if any(r.done for r in rows):
        raise ValueError("a row has already taken all its steps")
    composed = any(r.mid is not None for r in rows)
    use_cfg = composed or (any(r.guidance != 1.0 for r in rows) if cfg is None else cfg)
    branches = 3 if composed or (cfg is True and pipe.condition_encoder is not None) else 2 if use_cfg else 1
    net = denoiser if denoiser is not None else pipe.denoiser
    if rows[0].sampler == "vq-diffusion":
        _step_codes(pipe, rows, pad_to, branches, net)
    else:
        _step_latents(pipe, rows, pad_to, branches, net)


def _guided(out: torch.Tensor, rows: Sequence[Row], b: int, branches: int) -> torch.Tensor:
    """Classifier-free guidance per row (Ho & Salimans 2022): uncond + g (cond - uncond); g = 1 keeps cond as is.
    A row with a `mid` branch composes it (module top): uncond + g (mid - uncond) + g_c (cond - mid)."""
    n = len(rows)
    if branches == 1:
        return out[:n]
    uncond, cond = out[:n], out[b:b + n]
    shape = (-1, *[1] * (out.dim() - 1))
    g = torch.tensor([r.guidance for r in rows], dtype=out.dtype, device=out.device).view(shape)
    plain = torch.where(g == 1.0, cond, uncond + g * (cond - uncond))
    if branches == 2 or all(r.mid is None for r in rows):
        return plain
    mid = out[2 * b:2 * b + n]
    gc = torch.tensor([r.condition_guidance or 0.0 for r in rows], dtype=out.dtype, device=out.device).view(shape)
    composed = torch.tensor([r.mid is not None for r in rows], device=out.device).view(shape)
    return torch.where(composed, uncond + g * (mid - uncond) + gc * (cond - mid), plain)


def _context(rows: Sequence[Row], b: int, branches: int) -> torch.Tensor:
    """The (branches * b, T, D) context: uncond rows first, then cond, then each row's user without conditions."""
    pad = [rows[0].uncond] * (b - len(rows))
    cond = torch.stack([r.cond for r in rows] + pad)  # (b, T, D)
    if branches == 1:
        return cond
    parts = [torch.stack([r.uncond for r in rows] + pad), cond]
    if branches == 3:  # rows that do not compose repeat their cond (their third output is not used)
        parts.append(torch.stack([r.mid if r.mid is not None else r.cond for r in rows] + pad))
    return torch.cat(parts)


def _step_latents(pipe, rows, pad_to, branches, net) -> None:
    n, dev = len(rows), pipe.device
    b = max(pad_to or n, n)
    sched, at = [r.schedule for r in rows], [r.i for r in rows]
    x = torch.stack([r.x for r in rows])  # (n, C, h, w) float32
    t = torch.tensor([s.t[i] for s, i in zip(sched, at, strict=True)] + [0] * (b - n), device=dev)
    x_in = torch.cat([x, x.new_zeros((b - n, *x.shape[1:]))]) if b > n else x
    x_in, t = torch.cat([x_in] * branches), torch.cat([t] * branches)
    out = net(x_in.to(pipe.dtype), t, encoder_hidden_states=_context(rows, b, branches).to(pipe.dtype)).sample
    out = _guided(out.float(), rows, b, branches)  # (n, C, h, w)
    new_x, new_x0 = [None] * n, [None] * n
    for name in dict.fromkeys(r.sampler for r in rows):  # one vectorised update per sampler present
        sel = [k for k in range(n) if rows[k].sampler == name]
        whole = len(sel) == n
        ix = torch.tensor(sel, device=dev)
        xs, outs = (x, out) if whole else (x[ix], out[ix])
        sub_s, sub_i = [sched[k] for k in sel], [at[k] for k in sel]

        def c(key: str, sub_s=sub_s, sub_i=sub_i) -> torch.Tensor:
            return S.coefficients(sub_s, sub_i, key, dev)

        x0, eps = S.split_prediction(xs, outs, c("alpha"), c("sigma"), sub_s[0].prediction_type, sub_s[0].clip)
        if name == "ddim":
            xn = S.ddim_step(x0, eps, c("alpha_next"), c("sigma_next"))
        elif name == "ddpm":  # each row's noise from its own generator, drawn only while t > 0 (as diffusers)
            noise = torch.stack([torch.randn(rows[k].x.shape, generator=rows[k].gen) if sched[k].t[at[k]] > 0
                                 else torch.zeros(rows[k].x.shape) for k in sel]).to(dev)
            xn = S.ddpm_step(xs, x0, c("c_x0"), c("c_x"), c("std"), noise)
        else:
            prev = torch.stack([rows[k].x0_prev if rows[k].x0_prev is not None else x0[j] for j, k in enumerate(sel)])
            xn = S.dpmsolver_2m_step(xs, x0, prev, c("ratio"), c("phi"), c("k"))
        for j, k in enumerate(sel):
            new_x[k], new_x0[k] = xn[j], (x0[j] if name == "dpmsolver++" else None)
    for k, r in enumerate(rows):  # only now, so an exception above leaves every row as it was
        r.x, r.x0_prev, r.i = new_x[k], new_x0[k], r.i + 1


def _step_codes(pipe, rows, pad_to, branches, net) -> None:
    """VQ-Diffusion step (Gu et al. 2022) per group of rows at the same respaced step (the Transformer takes one
    timestep per call); follows diffusers' VQDiffusionPipeline: guided log-probabilities renormalised, clamped at -70."""
    groups: dict[tuple[int, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.steps, r.i), []).append(r)
    updates = []
    for group in groups.values():
        sched, model_t = group[0].schedule
        i = int(sched.timesteps[group[0].i])
        n = len(group)
        b = max(pad_to or n, n)
        codes = torch.stack([r.x for r in group] + [group[0].x] * (b - n))  # (b, L)
        model_in = torch.cat([codes] * branches)
        t = torch.tensor(model_t[i], dtype=torch.long, device=pipe.device)  # one scalar: AdaLayerNorm needs it
        ctx = _context(group, b, branches).to(pipe.dtype)
        logp = net(model_in, encoder_hidden_states=ctx, timestep=t).sample.float()  # (branches * b, K, L)
        if branches > 1:
            guided = _guided(logp, group, b, branches)
            renorm = guided - torch.logsumexp(guided, dim=1, keepdim=True)
            as_is = torch.tensor([r.guidance == 1.0 and r.mid is None for r in group], device=logp.device)
            logp = torch.where(as_is.view(-1, 1, 1), guided, renorm)  # composed rows are always renormalised
        else:
            logp = logp[:n]
        logp = logp.clamp(-70)
        log_prev = logp if i == 0 else sched.q_posterior(logp, codes[:n], i)  # (n, K or K+1, L)
        u = torch.stack([torch.rand(log_prev.shape[1:], generator=r.gen) for r in group]).to(log_prev.device)
        updates.append((group, S.gumbel_max(log_prev, u)))
    for group, new in updates:
        for r, x in zip(group, new, strict=True):
            r.x, r.i = x, r.i + 1


@torch.no_grad()
def finish_rows(pipe: DopplerPipeline, rows: Sequence[Row], one_by_one: bool = True) -> torch.Tensor:
    """Decode finished rows -> (N, C, H, W) dB on the CPU; `one_by_one` decodes each row alone, so its pixels
    never depend on which rows finished with it (False: one batch, faster). A pipeline with a texture bank adds
    one residual per row, drawn with the row's own generator (models/texture.py)."""
    if not all(r.done for r in rows):
        raise ValueError("a row has steps left")
    _, h, w = pipe.latent_shape
    out = []
    for group in ([[r] for r in rows] if one_by_one else [list(rows)]):
        x = torch.stack([r.x for r in group])
        if group[0].sampler == "vq-diffusion":
            out.append(ae.decode_codes(pipe.vae, x, (h, w)))
        else:
            out.append(ae.decode_latents(pipe.vae, x.float()))
    x_db = pipe.normalization.to_db(torch.cat(out).float().cpu())
    bank, users = pipe.texture, pipe.users  # read once: the service may swap either between requests
    if bank is None:
        return x_db
    return bank.add(x_db, [users[r.user] if 0 <= r.user < len(users) else None for r in rows], [r.gen for r in rows])


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
    condition_guidance_scale: float | None = None,
) -> torch.Tensor:
    """Classifier-free guided sampling (Ho & Salimans 2022) in the stage-1 latent space; returns (N, C, H, W) dB on the CPU.

    `scheduler=None` picks the route's own (DPM-Solver++ for kl and vq-latent, vq-diffusion for vq-diffusion).
    `pad_to` runs the networks at a fixed batch size (see step_rows), which makes samples bitwise
    batch-invariant on the CPU. `conditions` (N, K): each row's condition values
    (`pipe.condition_encoder.values_tensor`), NaN = absent; None = all absent (and no extra tokens at all
    for a pipeline without a condition encoder). `condition_guidance_scale` != `guidance_scale` composes the
    guidance of rows with conditions from three branches (module top).
    """
    scheduler = scheduler_for(pipe, scheduler)
    if len(user_indices) != len(seeds):
        raise ValueError(f"got {len(user_indices)} user indices but {len(seeds)} seeds")
    if len(seeds) == 0:
        raise ValueError("nothing to sample")
    if conditions is not None and (pipe.condition_encoder is None or len(conditions) != len(seeds)):
        raise ValueError("conditions need a pipeline with a condition encoder and one row per sample")
    rows = [start_row(pipe, u, s, num_inference_steps, guidance_scale, scheduler,
                      None if conditions is None else conditions[k], condition_guidance_scale)
            for k, (u, s) in enumerate(zip(user_indices, seeds, strict=True))]
    while not rows[0].done:
        step_rows(pipe, rows, pad_to)
    return finish_rows(pipe, rows, one_by_one=pad_to is not None)  # pad_to asks for batch-invariant bits
