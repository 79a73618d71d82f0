"""Enrolment: a new person from a few recordings, by learning only their user-encoder rows (textual inversion;
Gal et al., ICLR 2023) with the stage-2 loss while the autoencoder and the denoiser stay frozen.

The method itself is models.enrolment (shared with the service's POST /users); this module adds the vq-diffusion
route's code loss and the evaluator's few-shot protocol (training/eval/augmentation.py), where the population's
users are replaced by the targets. `dopplergen enroll` is training/enroll_cli.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from diffusers import VQDiffusionScheduler

from models.enrolment import EnrolConfig, LossFn, enrol
from models.losses import cache_codes, code_loss, corrupt, time_shifts
from models.pipeline import DopplerPipeline


@dataclass
class FewShotConfig(EnrolConfig):
    """The evaluator's few-shot adaptation: models.enrolment at the settings its published numbers were measured at."""

    steps: int = 300  # optimiser steps on the new rows (all target users at once; rows do not interact)
    batch_size: int = 16  # latents per step
    lr: float = 5e-3  # Adam on the embedding rows


def _code_loss(pipe: DopplerPipeline, x_db: torch.Tensor, cfg: EnrolConfig) -> LossFn:
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

    The population's users are dropped; the new rows start at the mean of theirs (models.enrolment), the null
    row (classifier-free guidance) and the token positions are the population's. Returns the pipeline and a log.
    """
    cfg = cfg or FewShotConfig()
    x = torch.as_tensor(np.asarray(x_db, np.float32))
    loss_fn = _code_loss(pop_pipe, x, cfg) if pop_pipe.route == "vq-diffusion" else None
    rows, log = enrol(pop_pipe, x, labels, len(users), cfg, loss_fn=loss_fn)
    enc = pop_pipe.user_encoder.with_rows(list(users), rows)
    meta = {**pop_pipe.meta, "fewshot": dict(asdict(cfg), users=list(users), n_recordings=int(len(x)))}
    pipe = DopplerPipeline(vae=pop_pipe.vae, denoiser=pop_pipe.denoiser, user_encoder=enc,
                           scheduler_config=dict(pop_pipe.scheduler_config), meta=meta)
    return pipe, dict(loss_first=log["loss_first"], loss_last=log["loss_last"])
