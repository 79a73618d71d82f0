"""Enrolment: new people's user-encoder rows learnt from a few recordings, UNet and VAE frozen.

Textual inversion (Gal et al., ICLR 2023) with a user row in place of a word embedding: the stage-2
diffusion loss on the person's latents, back-propagated through the frozen denoiser into the new rows
only. Each person is one row like every trained user, so enrolled and trained users share one batch.
`Enrolment.step()` is one optimiser step, so a worker can interleave enrolment with sampling;
`enrol()` runs it to the end. Used by `dopplergen enroll`, `POST /users` and the evaluator's few-shot
protocol; every route (the UNet routes' diffusion loss, VQ-Diffusion's x_0 cross-entropy; models/losses.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDPMScheduler, VQDiffusionScheduler

from models import autoencoder as ae
from models import losses as L
from models.pipeline import DopplerPipeline

# loss(idx (B,), context (B, T, D), generator) -> scalar: the denoiser's training loss on recordings `idx`.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class EnrolConfig:
    # Defaults measured in experiments/enrol_method.py (docs/enrolment.md): 200 steps did no better than 60;
    # the nearest-row start a little better than the mean. Sample enrolled people at guidance 4 (1.02x vs
    # 0.47x at 2).
    steps: int = 60  # Adam steps on the new rows (several people at once: rows do not interact)
    batch_size: int = 8  # latents per step
    lr: float = 2e-2  # Adam on the embedding rows; the LayerNorm after them makes the scale forgiving
    # circularly time-shifted copies of each recording (gait is periodic), as in training
    time_shifts: int = 8
    init: str = "nearest"  # start at the trained row that fits the recordings best, or "mean": the rows' mean
    init_noise: float = 0.1  # ... + this x the rows' per-element std x N(0, 1)
    # weight of mean((row - population mean)^2) added to the loss: a pull toward the population
    reg: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.steps < 0 or self.batch_size < 1 or self.time_shifts < 1 or not self.lr > 0 or self.reg < 0
                or self.init not in ("mean", "nearest")):
            raise ValueError(f"invalid enrolment config {self}")


def latent_loss_fn(pipe: DopplerPipeline, x_db: torch.Tensor, cfg: EnrolConfig,
                   cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> LossFn:
    """The stage-2 diffusion loss of the UNet routes (kl, vq-latent) on the recordings' cached latents
    (`cache`: L.cache_latents' (mean, std) when already made, e.g. in pieces)."""
    x = pipe.normalization.to_model(x_db.float())  # (N, C, H, W)
    # (S, N, c, h, w) each
    mean, std = cache or L.cache_latents(pipe.vae, x, L.time_shifts(x.shape[-1], cfg.time_shifts))
    mean = ae.scale(pipe.vae, mean.flatten(0, 1))  # (S * N, 4, h, w), shift-major like Enrolment's labels
    std = std.flatten(0, 1) * float(pipe.vae.config.scaling_factor)
    sched = DDPMScheduler.from_config(pipe.scheduler_config)
    device, dtype = pipe.device, pipe.denoiser.dtype

    def loss(idx: torch.Tensor, context: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        z0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)  # a posterior sample
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
        z_t, target = L.noised(sched, z0, noise, t)
        pred = pipe.denoiser(z_t.to(device, dtype), t.to(device),
                             encoder_hidden_states=context.to(dtype)).sample
        return L.latent_loss(sched, pred, target.to(device), t).mean()

    return loss


def code_loss_fn(pipe: DopplerPipeline, x_db: torch.Tensor, cfg: EnrolConfig,
                 cache: torch.Tensor | None = None) -> LossFn:
    """The VQ-Diffusion x_0 cross-entropy (route vq-diffusion) on the recordings' cached code grids."""
    x = pipe.normalization.to_model(x_db.float())
    if cache is None:
        cache = L.cache_codes(pipe.vae, x, L.time_shifts(x.shape[-1], cfg.time_shifts))
    codes = cache  # (S, N, L)
    codes = codes.reshape(-1, codes.shape[-1])  # (S * N, L), shift-major like Enrolment's labels
    sched = VQDiffusionScheduler.from_config(pipe.scheduler_config)
    device = pipe.device

    def loss(idx: torch.Tensor, context: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        # AdaLayerNorm: one t per call
        t = int(torch.randint(0, sched.config.num_train_timesteps, (1,), generator=g))
        x0 = codes[idx]
        x_t = L.corrupt(sched, x0, t, g).to(device)
        log_p = pipe.denoiser(x_t, encoder_hidden_states=context.to(pipe.denoiser.dtype),
                              timestep=torch.tensor(t, device=device)).sample
        return L.code_loss(log_p, x0.to(device))

    return loss


def population_rows(pipe: DopplerPipeline, exclude: Collection[str] = ()) -> torch.Tensor:
    """The trained users' rows (U, T*D), fp32 on the CPU: the prior new rows start from and are pulled
    toward. Enrolled people never feed it (those dopplergen.json lists under "enrolled_users", and `exclude`:
    the service's), so one bad enrolment cannot seed the next; nor does a row that is not finite."""
    enc = pipe.user_encoder
    rows = enc.embedding.weight.detach()[: enc.null_index].float().cpu()
    skip = set(exclude) | set((getattr(pipe, "meta", None) or {}).get("enrolled_users") or {})
    keep = [i for i, u in enumerate(enc.users) if u not in skip and bool(torch.isfinite(rows[i]).all())]
    if not keep:
        raise ValueError("no trained user with a finite row to start an enrolment from")
    return rows[keep]


class Enrolment:
    """New rows for `n_users` people from recordings x_db (N, C, H, W) dB with labels (N,) in 0..n_users-1.

    The set-up (stage-1 encodes of every recording at every time shift, then the nearest-row search, one
    forward pass per trained row) runs in the constructor, or, with `lazy=True`, piece by piece through
    `preparation()`, so that a caller sharing the device (the service's step worker) can run other work
    between the pieces. Both give the same rows, bit for bit."""

    def __init__(self, pipe: DopplerPipeline, x_db: np.ndarray | torch.Tensor, labels: np.ndarray | list[int],
                 n_users: int, cfg: EnrolConfig | None = None, loss_fn: LossFn | None = None,
                 exclude: Collection[str] = (), lazy: bool = False,
                 values: torch.Tensor | None = None) -> None:
        """`exclude`: enrolled people beyond dopplergen.json's list (the service's), kept out of the prior.
        `values`: a pipeline with conditions: the recordings' own condition values (N, K) as
        ConditionEncoder.values_tensor makes them (NaN = not known), so that the rows learn the person and
        not their recordings' activity or speed; None: every condition absent."""
        self.pipe, self.cfg = pipe, cfg or EnrolConfig()
        labels = torch.as_tensor(np.asarray(labels, np.int64))
        x_db = torch.as_tensor(np.asarray(x_db, np.float32))
        if len(labels) != len(x_db) or len(labels) == 0 or labels.min() < 0 or labels.max() >= n_users:
            raise ValueError("labels must index the n_users new people and match x_db")
        if not bool(torch.isfinite(x_db).all()):
            raise ValueError("recordings hold NaN or infinite values")
        if tuple(x_db.shape[1:]) != (pipe.channels, *pipe.image_size):
            raise ValueError(f"recordings have shape {tuple(x_db.shape[1:])}, the pipeline expects "
                             f"{(pipe.channels, *pipe.image_size)}")
        self.g = torch.Generator().manual_seed(self.cfg.seed)
        pop = population_rows(pipe, exclude)
        self.prior = pop.mean(0, keepdim=True)  # (1, T*D)
        spread = pop.std(0, keepdim=True) if len(pop) > 1 else torch.zeros_like(self.prior)
        noise = self.cfg.init_noise * spread * torch.randn(n_users, pop.shape[1], generator=self.g)
        self.lat_labels = labels.repeat(self.cfg.time_shifts)  # (S * N,): the caches' shift-major order
        self.lat_values = None
        if values is not None and getattr(pipe, "condition_encoder", None) is not None:
            values = torch.as_tensor(values, dtype=torch.float32)
            if values.shape != (len(labels), len(pipe.condition_encoder.names)):
                raise ValueError(f"values have shape {tuple(values.shape)}, expected "
                                 f"{(len(labels), len(pipe.condition_encoder.names))}")
            self.lat_values = values.repeat(self.cfg.time_shifts, 1)
        self.loss_fn = loss_fn
        self.losses: list[float] = []
        self._setup = self._prepare(x_db, pop, noise, n_users)
        if not lazy:
            for _ in self._setup:
                pass

    def preparation(self) -> Iterator[None]:
        """The rest of the set-up, one stage-1 encode (a time shift) or one candidate row a piece; nothing
        left when the constructor ran it."""
        yield from self._setup

    def _prepare(self, x_db: torch.Tensor, pop: torch.Tensor, noise: torch.Tensor,
                 n_users: int) -> Iterator[None]:
        pipe, cfg = self.pipe, self.cfg
        if self.loss_fn is None:
            x = pipe.normalization.to_model(x_db.float())
            shifts = L.time_shifts(x.shape[-1], cfg.time_shifts)
            if pipe.route == "vq-diffusion":
                parts = []  # stacked per shift as L.cache_codes stacks them: the same strides, the same bits
                for s in shifts:
                    parts.append(L.cache_codes(pipe.vae, x, [s])[0])
                    yield
                self.loss_fn = code_loss_fn(pipe, x_db, cfg, cache=torch.stack(parts))
            else:
                means, stds = [], []  # stacked as L.cache_latents stacks them (its strides reach the UNet)
                for s in shifts:
                    m, d = L.cache_latents(pipe.vae, x, [s])
                    means.append(m[0])
                    stds.append(d[0])
                    yield
                self.loss_fn = latent_loss_fn(pipe, x_db, cfg, cache=(torch.stack(means), torch.stack(stds)))
        if cfg.init == "nearest":
            found: list[torch.Tensor] = []
            yield from self._nearest(pop, n_users, found)
            base = torch.stack(found)  # (U, T*D)
        else:
            base = self.prior
        # (U, T*D), fp32 whatever the serving dtype
        self.rows = torch.nn.Parameter((base + noise).to(pipe.device))
        self.prior = self.prior.to(pipe.device)
        self.opt = torch.optim.Adam([self.rows], lr=cfg.lr)

    @property
    def ready(self) -> bool:
        """The set-up has run (the constructor, or all of preparation())."""
        return hasattr(self, "opt")

    @property
    def done(self) -> bool:
        return self.ready and len(self.losses) >= self.cfg.steps

    def _context(self, rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows (B, T*D) of latents `idx` -> the denoiser's context, as pipe.encode_context builds it for a
        user row: with those recordings' condition values where known, else every condition absent."""
        enc = self.pipe.user_encoder
        context = enc.tokens(rows.to(enc.device, enc.dtype))  # (B, T, D)
        cond = getattr(self.pipe, "condition_encoder", None)
        if cond is not None:
            values = cond.absent_values(len(rows)) if self.lat_values is None else self.lat_values[idx]
            context = torch.cat([context, cond(values).to(context.dtype)], dim=1)
        return context

    def _nearest(self, pop: torch.Tensor, n_users: int, best: list[torch.Tensor],
                 batch: int = 32) -> Iterator[None]:
        """Per new person, the trained row with the lowest loss on its recordings (same noise for every
        candidate), appended to `best`; yields after each candidate."""
        # its own stream: the optimisation's draws stay the same
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        for u in range(n_users):
            mine = torch.nonzero(self.lat_labels == u).flatten()
            idx = mine[torch.randint(0, len(mine), (batch,), generator=g)]
            state = g.get_state()
            losses = []
            for row in pop:
                g.set_state(state)
                with torch.no_grad():
                    losses.append(float(self.loss_fn(idx, self._context(row.expand(batch, -1), idx), g)))
                yield
            losses = np.where(np.isfinite(losses), losses, np.inf)  # a non-finite loss is never "nearest"
            if not np.isfinite(losses).any():
                raise FloatingPointError("enrolment diverged: no trained row gives a finite loss")
            best.append(pop[int(np.argmin(losses))])

    def step(self) -> float:
        """One Adam step on the new rows; returns the diffusion loss of the batch."""
        if not self.ready:
            raise RuntimeError("run preparation() to the end first (Enrolment(..., lazy=True))")
        cfg = self.cfg
        idx = torch.randint(0, len(self.lat_labels), (cfg.batch_size,), generator=self.g)
        rows = self.rows[self.lat_labels[idx].to(self.rows.device)]  # (B, T*D)
        with torch.enable_grad():
            loss = self.loss_fn(idx, self._context(rows, idx), self.g)
            total = loss + cfg.reg * (self.rows - self.prior).pow(2).mean() if cfg.reg else loss
            self.opt.zero_grad(set_to_none=True)
            total.backward()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(
                f"enrolment diverged: the loss is not finite at step {len(self.losses) + 1}"
            )
        self.opt.step()
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def final_loss(self) -> float:
        """Mean loss over the last tenth of the steps (one batch is noisy)."""
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return float(np.mean(tail)) if tail else math.nan

    def result(self) -> torch.Tensor:
        """The learnt rows (U, T*D), fp32 on the CPU (UserEncoder.with_users casts them to the encoder's
        dtype). Raises FloatingPointError when a row is not finite, so nothing of it is kept or served."""
        rows = self.rows.detach().float().cpu().clone()
        if not bool(torch.isfinite(rows).all()):
            raise FloatingPointError("enrolment produced a row that is not finite")
        return rows


def enrol(pipe: DopplerPipeline, x_db: np.ndarray | torch.Tensor, labels: np.ndarray | list[int],
          n_users: int,
          cfg: EnrolConfig | None = None, loss_fn: LossFn | None = None,
          progress: Callable[[int, float], None] | None = None,
          values: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Run an Enrolment to the end: the new rows and a log (first and final loss, steps)."""
    job = Enrolment(pipe, x_db, labels, n_users, cfg, loss_fn, values=values)
    while not job.done:
        loss = job.step()
        if progress is not None:
            progress(len(job.losses), loss)
    first = job.losses[0] if job.losses else math.nan
    return job.result(), dict(loss_first=first, loss_last=job.final_loss(), steps=len(job.losses))
