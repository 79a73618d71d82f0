"""The one sampler, and the one place its settings are decided: classifier-free guided latent diffusion,
shared by training previews, evaluation, bulk export and the service.

`resolve()` turns what a caller asked for (steps, guidance, condition guidance, sampler; any left None) into
the settings to sample with, from the pipeline's dopplergen.json defaults and the rules below, for trained and
enrolled people alike. The service (POST /generate and GET /info), `dopplergen generate` and `dopplergen
evaluate` all call it, so the same request samples the same way everywhere.

A sample is a `Row` that carries everything of its own: conditioning tokens, noise generator, solver state,
step count, position in its schedule and guidance scale. `step_rows()` advances any set of rows by one step
with one guided forward pass, whatever mix of timesteps, samplers and guidance they hold; the service's
step-level batcher calls it once per device step, and `sample()` is the same loop over rows that start
together. All three pipeline routes are served: continuous latent diffusion (kl, vq-latent) with the
per-row DDPM / DDIM / DPM-Solver++ of models.solvers, and discrete diffusion over VQ code indices
(vq-diffusion) with a VQDiffusionScheduler respaced to the requested number of steps.

Naming: a *sampler* is how a sample is drawn at inference (ddpm, ddim, dpmsolver++, vq-diffusion; the HTTP
field and CLI flag keep their public name `scheduler`); the *noise schedule* is the training DDPM config
(`pipe.scheduler_config`, the pipeline folder's scheduler/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models import autoencoder as ae
from models import solvers as S
from models.pipeline import DopplerPipeline
from models.solvers import respaced_vq_scheduler  # noqa: F401  (re-exported: tests and tools use it from here)

SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "vq-diffusion")
CONTINUOUS_SAMPLERS = SAMPLERS[:3]
# What each pipeline route can sample with; the last entry is the route's default.
SAMPLERS_BY_ROUTE = {
    "kl": CONTINUOUS_SAMPLERS, "vq-latent": CONTINUOUS_SAMPLERS, "vq-diffusion": ("vq-diffusion",),
}
# The sampling defaults everyone shares; a pipeline's dopplergen.json may override them (num_inference_steps,
# guidance_scale, scheduler, identity_guidance_scale, condition_guidance_scale).
DEFAULT_STEPS = 20  # DPM-Solver++(2M) is near converged at 20 steps on the demo checkpoint
DEFAULT_GUIDANCE = 2.0  # classifier-free guidance scale the demo checkpoint was evaluated at
DEFAULT_SAMPLER = "dpmsolver++"  # DPM-Solver++(2M), for the continuous routes
# Guidance for enrolled people (a row learnt from a few recordings, dopplergen enroll / POST /users): measured
# 1.02x real-recording recognition at 4 against 0.47x at the demo's 2 (experiments/enrol_method.py,
# docs/enrolment.md). Used when a request names no guidance.
ENROLLED_GUIDANCE = 4.0
# Compositional guidance for pipelines with conditions (Liu et al. 2022, "Compositional Visual Generation"):
# eps = eps(null, absent) + g (eps(user, absent) - eps(null, absent)) + g_c (eps(user, cond) - eps(user,
# absent)) g pulls toward the person, g_c toward the requested speed and aspect. g_c = g (or None) is plain
# two-branch guidance, eps(null, absent) + g (eps(user, cond) - eps(null, absent)). Measured on the
# conditioned demo (experiments/condition_guidance.py): at g = g_c = 2 identity fell to 0.55 / 0.68 at a
# person's own slow / fast speeds; g = 3, g_c = 1 kept it at 0.90 / 0.91 with the torso line within 3.1%. Over
# the person's own drawn conditions, though, plain guidance 2 makes the more useful training data (TSTR 0.91x
# against 0.84x TRTR, experiments/guidance_tstr.py). Hence: a request that names a condition is composed with
# the pipeline's identity_guidance_scale / condition_guidance_scale; one that leaves them all to be drawn is
# plain.
assert SAMPLERS_BY_ROUTE["kl"][-1] == DEFAULT_SAMPLER and set(CONTINUOUS_SAMPLERS) == set(S.SOLVERS)


@dataclass(frozen=True)
class Settings:
    """What a sample is drawn with. `condition_guidance` None = plain guidance (no compositional third
    branch)."""

    steps: int
    guidance: float
    condition_guidance: float | None
    sampler: str


def default_sampler(route: str) -> str:
    """The sampler a route uses when none is asked for (DPM-Solver++ on kl / vq-latent, vq-diffusion
    otherwise)."""
    return SAMPLERS_BY_ROUTE[route][-1]


def is_enrolled(pipe: DopplerPipeline, user: str | None) -> bool:
    """True for a person added by enrolment and written into the pipeline folder (dopplergen.json's
    "enrolled_users"); the service also counts the people enrolled through POST /users while it runs."""
    return user is not None and user in ((getattr(pipe, "meta", None) or {}).get("enrolled_users") or {})


def resolve(
    pipe: DopplerPipeline, *, steps: int | None = None, guidance: float | None = None,
    condition_guidance: float | None = None, sampler: str | None = None, named: bool = False,
    enrolled: bool = False,
) -> Settings:
    """The settings to sample with. Explicit values win; then dopplergen.json's defaults; then this module's.

    - steps: `steps`, else "num_inference_steps", else 20.
    - sampler: `sampler`, else "scheduler", else the route's own (`default_sampler`). Not checked here
      (`sampler_for` checks a name against the route).
    - guidance of an `enrolled` person (see `is_enrolled`) with none asked: ENROLLED_GUIDANCE.
    - `named`: the request names a condition (speed_mps, ...) rather than leaving all to be drawn. A pipeline
      with conditions composes the guidance (module top) when a condition is named or `condition_guidance` is
      given: g = `guidance`, else "identity_guidance_scale", else "guidance_scale"; g_c =
      `condition_guidance`, else "condition_guidance_scale" (absent: plain). Otherwise g = `guidance`, else
      "guidance_scale", else 2.
    """
    meta = getattr(pipe, "meta", None) or {}
    if guidance is None and enrolled:
        guidance = ENROLLED_GUIDANCE
    steps = int(steps if steps is not None else meta.get("num_inference_steps", DEFAULT_STEPS))
    route = getattr(pipe, "route", None) or meta.get("route", "kl")
    sampler = str(sampler if sampler is not None else meta.get("scheduler", default_sampler(route)))
    plain = float(guidance if guidance is not None else meta.get("guidance_scale", DEFAULT_GUIDANCE))
    gc = None
    if getattr(pipe, "condition_encoder", None) is not None and (condition_guidance is not None or named):
        gc = condition_guidance if condition_guidance is not None else meta.get("condition_guidance_scale")
    if gc is None:
        return Settings(steps, plain, None, sampler)
    g = guidance if guidance is not None else meta.get("identity_guidance_scale", plain)
    return Settings(steps, float(g), float(gc), sampler)


def sampler_for(pipe: DopplerPipeline, name: str | None) -> str:
    """Check a requested sampler against the pipeline's route; None picks the route's own."""
    allowed = SAMPLERS_BY_ROUTE[pipe.route]
    name = name or default_sampler(pipe.route)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {list(allowed)}")
    if name not in allowed:
        raise ValueError(
            f"sampler {name!r} does not apply to a {pipe.route} pipeline; choose one of {list(allowed)}"
        )
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
    # models.solvers.Schedule, or (respaced VQDiffusionScheduler, trained timesteps) on the vq-diffusion route
    schedule: S.Schedule | tuple
    i: int = 0  # steps taken
    x0_prev: torch.Tensor | None = None  # DPM-Solver++(2M)'s previous x0 estimate
    # Compositional guidance (see above): the row's user with every condition absent, and g_c. None =
    # two-branch.
    mid: torch.Tensor | None = None
    condition_guidance: float | None = None
    user: int = -1  # the row's user index (the texture bank draws from that person's residuals); -1: none

    @property
    def done(self) -> bool:
        return self.i >= self.steps



def start_row(
    pipe: DopplerPipeline, user_index: int, seed: int, steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    sampler: str | None = None, conditions: torch.Tensor | None = None,
    condition_guidance: float | None = None, init: torch.Tensor | None = None, strength: float = 1.0,
) -> Row:
    """A new row at step 0: the conditioning of `pipe.encode_context` and the seed's own initial noise.

    `conditions` (K,) are the row's condition values (NaN = absent), for pipelines with a condition encoder.
    `condition_guidance` (g_c) != `guidance` composes the guidance from three branches (see the module top);
    it applies only to a row with some condition present.
    `init` (C, h, w): a recording's scaled latent (`encode_init`) to start from instead of pure noise
    (SDEdit, Meng et al. 2022; DA-Fusion's few-shot augmentation, Trabucco et al. 2024): the row skips the
    first 1 - `strength` of its schedule and starts from the latent noised to that step's level with the
    seed's noise. strength 1 = pure noise, as without `init`.
    """
    sampler = sampler_for(pipe, sampler)
    if steps < 1:
        raise ValueError("num_inference_steps must be >= 1")
    if not 0 <= int(user_index) <= pipe.user_encoder.null_index:
        raise ValueError("user index out of range")
    if conditions is not None and pipe.condition_encoder is None:
        raise ValueError("conditions need a pipeline with a condition encoder")
    idx = torch.tensor([int(user_index), pipe.user_encoder.null_index], dtype=torch.long, device=pipe.device)
    values, mid = None, None
    if conditions is not None:
        values = torch.stack(
            [conditions.float().cpu(), torch.full_like(conditions.float().cpu(), float("nan"))]
        )
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
        # init_noise_sigma is 1 for all three
        x = torch.randn(pipe.latent_shape, generator=gen).to(pipe.device)
    first = 0
    if init is not None and float(strength) != 1.0:
        if sampler == "vq-diffusion":
            raise ValueError("starting from a recording (init) needs a continuous route, not vq-diffusion")
        if not 0.0 < float(strength) <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if tuple(init.shape) != tuple(pipe.latent_shape):
            raise ValueError(f"init latent of shape {tuple(init.shape)}, pipeline's {pipe.latent_shape}")
        first = steps - max(1, round(float(strength) * steps))  # DPM-Solver++ takes a first-order step there
        x = float(plan.alpha[first]) * init.float().to(pipe.device) + float(plan.sigma[first]) * x
    return Row(sampler, int(steps), float(guidance), cond, uncond, gen, x, plan, i=first, mid=mid,
               condition_guidance=float(condition_guidance) if composed else None, user=int(user_index))


@torch.no_grad()
def encode_init(pipe: DopplerPipeline, x_db: torch.Tensor) -> torch.Tensor:
    """Recordings (N, C, H, W) dB -> the scaled latents (posterior means) that rows start from (`init`)."""
    mean, _ = ae.posterior(pipe.vae, pipe.normalization.to_model(torch.as_tensor(x_db).float()))
    return ae.scale(pipe.vae, mean).float().cpu()


@torch.no_grad()
def step_rows(
    pipe: DopplerPipeline, rows: Sequence[Row], pad_to: int | None = None, cfg: bool | None = None,
    denoiser: torch.nn.Module | None = None,
) -> None:
    """Advance every row by one step of its own schedule, in place, with one guided forward pass.

    `pad_to` runs the network at a fixed batch (padding rows are thrown away): BLAS and oneDNN pick kernels by
    batch size, so only at a fixed shape is each row computed bit for bit the same wherever it sits.
    `cfg=None` runs the unconditional half only when some row has guidance != 1, and the
    user-without-conditions third only when some row composes its guidance; True always runs the unconditional
    half, and the third too on a pipeline with conditions (a fixed shape again). `denoiser` replaces
    pipe.denoiser (e.g. a compiled one).
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
        S.step_codes(pipe, rows, pad_to, branches, net)
    else:
        S.step_latents(pipe, rows, pad_to, branches, net)


@torch.no_grad()
def finish_rows(pipe: DopplerPipeline, rows: Sequence[Row], one_by_one: bool = True) -> torch.Tensor:
    """Decode finished rows -> (N, C, H, W) dB on the CPU; `one_by_one` decodes each row alone, so its pixels
    never depend on which rows finished with it (False: one batch, faster). A pipeline with a texture bank
    adds one residual per row, drawn with the row's own generator (models/texture.py)."""
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
    return bank.add(x_db, [users[r.user] if 0 <= r.user < len(users) else None for r in rows],
                    [r.gen for r in rows])


@torch.no_grad()
def sample(
    pipe: DopplerPipeline,
    user_indices: Sequence[int],
    seeds: Sequence[int],
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float | Sequence[float] = DEFAULT_GUIDANCE,
    sampler: str | None = None,
    pad_to: int | None = None,
    conditions: torch.Tensor | None = None,
    condition_guidance_scale: float | None = None,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Classifier-free guided sampling (Ho & Salimans 2022) in the stage-1 latent space; returns (N, C, H, W)
    dB on the CPU.

    `sampler=None` picks the route's own (DPM-Solver++ for kl and vq-latent, vq-diffusion for vq-diffusion).
    `guidance_scale` is one scale, or one per sample (e.g. enrolled people beside trained ones, `resolve`).
    `pad_to` runs the networks at a fixed batch size (see step_rows), which makes samples bitwise
    batch-invariant on the CPU. `conditions` (N, K): each row's condition values
    (`pipe.condition_encoder.values_tensor`), NaN = absent; None = all absent (and no extra tokens at all
    for a pipeline without a condition encoder). `condition_guidance_scale` != `guidance_scale` composes the
    guidance of rows with conditions from three branches (module top). `init` (N, C, h, w): scaled latents to
    start each row from at `strength` (start_row).
    """
    sampler = sampler_for(pipe, sampler)
    if len(user_indices) != len(seeds):
        raise ValueError(f"got {len(user_indices)} user indices but {len(seeds)} seeds")
    if len(seeds) == 0:
        raise ValueError("nothing to sample")
    if conditions is not None and (pipe.condition_encoder is None or len(conditions) != len(seeds)):
        raise ValueError("conditions need a pipeline with a condition encoder and one row per sample")
    scales = (
        [guidance_scale] * len(seeds) if isinstance(guidance_scale, (int, float)) else list(guidance_scale)
    )
    if len(scales) != len(seeds):
        raise ValueError(f"got {len(scales)} guidance scales for {len(seeds)} samples")
    if init is not None and len(init) != len(seeds):
        raise ValueError(f"got {len(init)} init latents for {len(seeds)} samples")
    rows = [start_row(pipe, u, s, num_inference_steps, g, sampler,
                      None if conditions is None else conditions[k], condition_guidance_scale,
                      None if init is None else init[k], strength)
            for k, (u, s, g) in enumerate(zip(user_indices, seeds, scales, strict=True))]
    while not rows[0].done:
        step_rows(pipe, rows, pad_to)
    return finish_rows(pipe, rows, one_by_one=pad_to is not None)  # pad_to asks for batch-invariant bits
