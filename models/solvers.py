"""Per-row solvers: each sample carries its own schedule, so rows at different timesteps share a forward pass.

k-diffusion style: a `Schedule` is a small table of per-step coefficients (built once per sampler and step
count from the training DDPM schedule, with diffusers' own timestep spacing), and each update is a pure,
stateless function of per-row tensors. Coefficients are (N, 1, 1, 1) so one call updates N rows that sit at
different steps of different schedules. Transcendental functions live in the tables (float64), so the
per-step arithmetic is only +, -, *, which gives every row the same bits whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, VQDiffusionScheduler

SOLVERS = ("ddpm", "ddim", "dpmsolver++")  # the continuous routes' per-row solvers


@dataclass(frozen=True, eq=False)
class Schedule:
    """One sampler's discretisation: step i denoises at model timestep t[i] from (alpha, sigma) to
    (alpha_next, sigma_next)."""

    sampler: str
    t: tuple[int, ...]  # (n,) timesteps the denoiser sees
    alpha: np.ndarray  # (n,) signal scale sqrt(alpha_bar) at step i
    sigma: np.ndarray  # (n,) noise scale sqrt(1 - alpha_bar) at step i
    alpha_next: np.ndarray  # (n,) where step i lands
    sigma_next: np.ndarray
    coef: dict[str, np.ndarray]  # per-step coefficients of the sampler's update, float64
    prediction_type: str  # epsilon | v_prediction | sample
    clip: float | None  # clamp x0 to +-clip (DDPM/DDIM clip_sample), None = no clamp

    @property
    def steps(self) -> int:
        return len(self.t)


_CACHE: dict[tuple, Schedule] = {}


def make_schedule(sampler: str, scheduler_config: dict, num_inference_steps: int) -> Schedule:
    """The per-step table of `sampler` at `num_inference_steps`, from the training DDPM config (cached)."""
    key = (sampler, int(num_inference_steps), tuple(sorted((k, str(v)) for k, v in scheduler_config.items())))
    if key not in _CACHE:
        if len(_CACHE) > 512:
            _CACHE.clear()
        _CACHE[key] = _build(sampler, dict(scheduler_config), int(num_inference_steps))
    return _CACHE[key]


def _build(sampler: str, config: dict, n: int) -> Schedule:
    if sampler not in SOLVERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SOLVERS)}")
    if n < 1:
        raise ValueError("num_inference_steps must be >= 1")
    if config.get("thresholding"):
        raise ValueError("dynamic thresholding is not supported by the per-row samplers")
    pred = str(config.get("prediction_type", "epsilon"))
    if sampler == "dpmsolver++":
        return _dpmsolver_schedule(config, n, pred)
    sched = (DDIMScheduler if sampler == "ddim" else DDPMScheduler).from_config(config)
    sched.set_timesteps(n)
    t = np.array([int(v) for v in sched.timesteps])
    ac = sched.alphas_cumprod.double().numpy()
    prev = t - int(sched.config.num_train_timesteps) // n  # diffusers' previous timestep
    final = float(sched.final_alpha_cumprod) if sampler == "ddim" else 1.0
    a_t = ac[t]
    a_next = np.where(prev >= 0, ac[np.maximum(prev, 0)], final)
    clip = float(sched.config.clip_sample_range) if sched.config.clip_sample else None
    coef: dict[str, np.ndarray] = {}
    if sampler == "ddpm":
        if sched.config.variance_type != "fixed_small":
            raise ValueError("per-row DDPM supports variance_type fixed_small, not "
                             f"{sched.config.variance_type!r}")
        step_alpha = a_t / a_next  # alpha_t of the (respaced) single step
        beta = 1.0 - step_alpha
        coef = {
            "c_x0": np.sqrt(a_next) * beta / (1.0 - a_t),  # posterior mean, Ho et al. 2020 Eq. 7
            "c_x": np.sqrt(step_alpha) * (1.0 - a_next) / (1.0 - a_t),
            # fixed-small variance; no noise on the step that starts at t = 0
            "std": np.where(t > 0, np.sqrt(np.maximum((1.0 - a_next) / (1.0 - a_t) * beta, 1e-20)), 0.0),
        }
    return Schedule(sampler, tuple(int(v) for v in t), np.sqrt(a_t), np.sqrt(1.0 - a_t), np.sqrt(a_next),
                    np.sqrt(1.0 - a_next), coef, pred, clip)


def _dpmsolver_schedule(config: dict, n: int, pred: str) -> Schedule:
    sched = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    c = sched.config
    spacings = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                "use_flow_sigmas")
    if any(c.get(k) for k in spacings):  # .get: releases before a spacing option have none of it
        raise ValueError("the per-row DPM-Solver++ supports the default sigma spacing only")
    sched.set_timesteps(n)
    t = [int(v) for v in sched.timesteps]
    # (n+1,) VP sigmas (sigma / alpha); the last is 0 (final_sigmas_type zero) or sigma_min
    vp = sched.sigmas.double().numpy()
    alpha = 1.0 / np.sqrt(vp**2 + 1.0)
    sigma = vp * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)  # half the log-SNR; +inf at sigma = 0
    h = lam[1:] - lam[:-1]  # (n,)
    steps = len(t)
    # diffusers' order rule: first order on the first step and on a lower-order final step, else second order.
    final_first = (c.get("euler_at_final", False) or (c.lower_order_final and steps < 15)
                   or c.get("final_sigmas_type", "zero") == "zero")
    second = np.array([i > 0 and not (i == steps - 1 and final_first) for i in range(steps)])
    r = np.ones(steps)
    r[1:] = h[:-1] / h[1:]  # h_{i-1} / h_i
    phi = alpha[1:] * np.expm1(-h)  # alpha_{i+1} (e^{-h} - 1)
    coef = {
        "ratio": sigma[1:] / sigma[:-1],
        "phi": phi,
        "k": np.where(second, 0.5 * phi / np.where(second, r, 1.0), 0.0),  # weight of the x0 difference
    }
    return Schedule("dpmsolver++", tuple(t), alpha[:-1], sigma[:-1], alpha[1:], sigma[1:], coef, pred, None)


# ---- the pure update functions; every coefficient is a (N, 1, 1, 1) tensor ---------------------------------
def split_prediction(x, out, alpha, sigma, prediction_type: str, clip: float | None = None):
    """(x0, eps) from the network output under the VP forward process x = alpha x0 + sigma eps (Ho et al.
    2020)."""
    if prediction_type == "epsilon":
        x0, eps = (x - sigma * out) / alpha, out
    elif prediction_type == "v_prediction":  # v = alpha eps - sigma x0 (Salimans & Ho 2022)
        x0, eps = alpha * x - sigma * out, alpha * out + sigma * x
    elif prediction_type == "sample":
        x0, eps = out, (x - alpha * out) / sigma
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    return x0, eps


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_next: torch.Tensor,
              sigma_next: torch.Tensor) -> torch.Tensor:
    """DDIM, eta = 0 (Song et al. 2021, Eq. 12): move to the next timestep along the predicted noise."""
    return alpha_next * x0 + sigma_next * eps


def ddpm_step(x, x0, c_x0, c_x, std, noise) -> torch.Tensor:
    """Ancestral DDPM: sample the posterior q(x_{t-1} | x_t, x0) with the fixed-small variance (Ho et al.
    2020, Eqs. 6-7)."""
    return c_x0 * x0 + c_x * x + std * noise


def dpmsolver_2m_step(x, x0, x0_prev, ratio, phi, k) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2, diffusers' midpoint form); k = 0 makes it the first-order
    step."""
    return ratio * x - phi * x0 - k * (x0 - x0_prev)


_SCALES = ("alpha", "sigma", "alpha_next", "sigma_next")


def coefficients(rows_sched: list[Schedule], rows_i: list[int], name: str, device) -> torch.Tensor:
    """Gather one coefficient per row (each row at its own step of its own schedule) as (N, 1, 1, 1)
    float32."""
    table = (lambda s: getattr(s, name)) if name in _SCALES else (lambda s: s.coef[name])  # noqa: E731
    vals = [float(table(s)[i]) for s, i in zip(rows_sched, rows_i, strict=True)]
    return torch.tensor(vals, dtype=torch.float32, device=device).view(-1, 1, 1, 1)


# ---- discrete diffusion over VQ code indices (route vq-diffusion) ------------------------------------------
_VQ_CACHE: dict[tuple, tuple[VQDiffusionScheduler, list[int]]] = {}


def vq_schedule(scheduler_config: dict, num_inference_steps: int) -> tuple[VQDiffusionScheduler, list[int]]:
    """respaced_vq_scheduler(), cached: rows with the same step count share one (read-only) scheduler."""
    key = (int(num_inference_steps), tuple(sorted((k, str(v)) for k, v in scheduler_config.items())))
    if key not in _VQ_CACHE:
        if len(_VQ_CACHE) > 256:
            _VQ_CACHE.clear()
        _VQ_CACHE[key] = respaced_vq_scheduler(scheduler_config, num_inference_steps)
    return _VQ_CACHE[key]


def gumbel_max(log_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A draw from each categorical exp(log_p) over dim 1, given uniform noise u (the Gumbel-max trick)."""
    return (log_p - torch.log(-torch.log(u + 1e-30) + 1e-30)).argmax(dim=1)


def respaced_vq_scheduler(
    scheduler_config: dict, num_inference_steps: int
) -> tuple[VQDiffusionScheduler, list[int]]:
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
        raise ValueError(
            f"num_inference_steps must be in 1..{T} (the trained vq-diffusion timesteps), got {n}"
        )
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


# ---- one guided step over a batch of rows (models.sampling.Row), shared by every route ---------------------
def guided(out: torch.Tensor, rows: Sequence, b: int, branches: int) -> torch.Tensor:
    """Classifier-free guidance per row (Ho & Salimans 2022): uncond + g (cond - uncond); g = 1 keeps cond as
    is. A row with a `mid` branch composes it (module top): uncond + g (mid - uncond) + g_c (cond - mid)."""
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
    gc = torch.tensor([r.condition_guidance or 0.0 for r in rows], dtype=out.dtype,
                      device=out.device).view(shape)
    composed = torch.tensor([r.mid is not None for r in rows], device=out.device).view(shape)
    return torch.where(composed, uncond + g * (mid - uncond) + gc * (cond - mid), plain)


def context(rows: Sequence, b: int, branches: int) -> torch.Tensor:
    """The (branches * b, T, D) context: uncond rows first, then cond, then each row's user without
    conditions."""
    pad = [rows[0].uncond] * (b - len(rows))
    cond = torch.stack([r.cond for r in rows] + pad)  # (b, T, D)
    if branches == 1:
        return cond
    parts = [torch.stack([r.uncond for r in rows] + pad), cond]
    if branches == 3:  # rows that do not compose repeat their cond (their third output is not used)
        parts.append(torch.stack([r.mid if r.mid is not None else r.cond for r in rows] + pad))
    return torch.cat(parts)


def step_latents(pipe, rows, pad_to, branches, net) -> None:
    """One step of the continuous routes for `rows` (models.sampling.Row): one guided forward pass, then one
    vectorised update per solver present."""
    n, dev = len(rows), pipe.device
    b = max(pad_to or n, n)
    sched, at = [r.schedule for r in rows], [r.i for r in rows]
    x = torch.stack([r.x for r in rows])  # (n, C, h, w) float32
    t = torch.tensor([s.t[i] for s, i in zip(sched, at, strict=True)] + [0] * (b - n), device=dev)
    x_in = torch.cat([x, x.new_zeros((b - n, *x.shape[1:]))]) if b > n else x
    x_in, t = torch.cat([x_in] * branches), torch.cat([t] * branches)
    out = net(x_in.to(pipe.dtype), t, encoder_hidden_states=context(rows, b, branches).to(pipe.dtype)).sample
    out = guided(out.float(), rows, b, branches)  # (n, C, h, w)
    new_x, new_x0 = [None] * n, [None] * n
    for name in dict.fromkeys(r.sampler for r in rows):  # one vectorised update per sampler present
        sel = [k for k in range(n) if rows[k].sampler == name]
        whole = len(sel) == n
        ix = torch.tensor(sel, device=dev)
        xs, outs = (x, out) if whole else (x[ix], out[ix])
        sub_s, sub_i = [sched[k] for k in sel], [at[k] for k in sel]

        def c(key: str, sub_s=sub_s, sub_i=sub_i) -> torch.Tensor:
            return coefficients(sub_s, sub_i, key, dev)

        x0, eps = split_prediction(xs, outs, c("alpha"), c("sigma"), sub_s[0].prediction_type, sub_s[0].clip)
        if name == "ddim":
            xn = ddim_step(x0, eps, c("alpha_next"), c("sigma_next"))
        elif name == "ddpm":  # each row's noise from its own generator, drawn only while t > 0 (as diffusers)
            noise = torch.stack([torch.randn(rows[k].x.shape, generator=rows[k].gen) if sched[k].t[at[k]] > 0
                                 else torch.zeros(rows[k].x.shape) for k in sel]).to(dev)
            xn = ddpm_step(xs, x0, c("c_x0"), c("c_x"), c("std"), noise)
        else:
            prev = torch.stack([rows[k].x0_prev if rows[k].x0_prev is not None else x0[j] for j,
                                k in enumerate(sel)])
            xn = dpmsolver_2m_step(xs, x0, prev, c("ratio"), c("phi"), c("k"))
        for j, k in enumerate(sel):
            new_x[k], new_x0[k] = xn[j], (x0[j] if name == "dpmsolver++" else None)
    for k, r in enumerate(rows):  # only now, so an exception above leaves every row as it was
        r.x, r.x0_prev, r.i = new_x[k], new_x0[k], r.i + 1


def step_codes(pipe, rows, pad_to, branches, net) -> None:
    """VQ-Diffusion step (Gu et al. 2022) per group of rows at the same respaced step (the Transformer takes
    one timestep per call); follows diffusers' VQDiffusionPipeline: guided log-probabilities renormalised,
    clamped at -70."""
    groups: dict[tuple[int, int], list] = {}
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
        # one scalar: AdaLayerNorm needs it
        t = torch.tensor(model_t[i], dtype=torch.long, device=pipe.device)
        ctx = context(group, b, branches).to(pipe.dtype)
        logp = net(model_in, encoder_hidden_states=ctx, timestep=t).sample.float()  # (branches * b, K, L)
        if branches > 1:
            mixed = guided(logp, group, b, branches)
            renorm = mixed - torch.logsumexp(mixed, dim=1, keepdim=True)
            as_is = torch.tensor([r.guidance == 1.0 and r.mid is None for r in group], device=logp.device)
            logp = torch.where(as_is.view(-1, 1, 1), mixed, renorm)  # composed rows are always renormalised
        else:
            logp = logp[:n]
        logp = logp.clamp(-70)
        log_prev = logp if i == 0 else sched.q_posterior(logp, codes[:n], i)  # (n, K or K+1, L)
        u = torch.stack([torch.rand(log_prev.shape[1:], generator=r.gen) for r in group]).to(log_prev.device)
        updates.append((group, gumbel_max(log_prev, u)))
    for group, new in updates:
        for r, x in zip(group, new, strict=True):
            r.x, r.i = x, r.i + 1
