"""The evaluator's few-shot adaptation: a population pipeline adapted to the target users from their k
recordings, by learning only new user-encoder rows (textual inversion; Gal et al., ICLR 2023) with the stage-2
loss while the autoencoder and the denoiser stay frozen.

It serves the few-shot protocol (training/eval/augmentation.py, trials.py), where the population's users are
replaced by the targets, at the settings the published numbers were measured at (FewShotConfig). The method
itself is models.enrolment, shared with the service's POST /users and `dopplergen enroll`
(training/enroll.py), which add one person to a pipeline instead of replacing its users.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models.condition_stats import add_people, forget_people, value_rows
from models.enrolment import EnrolConfig, enrol
from models.pipeline import DopplerPipeline


@dataclass
class FewShotConfig(EnrolConfig):
    """The evaluator's few-shot adaptation: models.enrolment at the settings its published numbers were
    measured at."""

    steps: int = 300  # optimiser steps on the new rows (all target users at once; rows do not interact)
    batch_size: int = 16  # latents per step
    lr: float = 5e-3  # Adam on the embedding rows
    init: str = "mean"  # new rows start at the population's mean row


def adapt_new_users(pop_pipe: Any, x_db: np.ndarray, labels: np.ndarray, users: list[str],
                    cfg: FewShotConfig | None = None,
                    columns: dict[str, np.ndarray] | None = None) -> tuple[Any, dict[str, Any]]:
    """A pipeline for `users` from a population pipeline: frozen VAE + UNet, new user rows learnt from x_db
    only.

    The population's users are dropped; the new rows start at the mean of theirs (models.enrolment), the null
    row (classifier-free guidance) and the token positions are the population's. A population with a texture
    bank gives the targets a bank of their own recordings' residuals (models/texture.py), as `dopplergen
    enroll` does. `columns`: the recordings' manifest columns (aligned with x_db); for a pipeline with
    conditions, those it takes are the recordings' known conditions while the rows are learnt, and the
    targets' omitted conditions are then drawn from their own recordings (models.condition_stats.add_people).
    Returns the pipeline and a log.
    """
    cfg = cfg or FewShotConfig()
    x = torch.as_tensor(np.asarray(x_db, np.float32))
    cond = pop_pipe.condition_encoder
    values = None
    if columns and cond is not None:
        values = cond.values_tensor(value_rows(cond, columns, len(x)))
    rows, log = enrol(pop_pipe, x, labels, len(users), cfg, values=values)
    enc = pop_pipe.user_encoder.with_rows(list(users), rows)
    meta = {**pop_pipe.meta, "fewshot": dict(asdict(cfg), users=list(users), n_recordings=int(len(x)))}
    # the population's per-person distributions belong to other people, whose names
    if meta.get("conditions"):
        # may repeat the targets' (user00, ...): the targets' omitted conditions are drawn from the
        # population's whole
        meta["conditions"] = forget_people(meta["conditions"])  # per activity too
        if columns and cond is not None:  # the targets' own, from their recordings
            owners = [users[int(k)] for k in labels]
            meta["conditions"] = add_people(meta["conditions"], cond, columns, owners)
    texture = None
    if pop_pipe.texture is not None:
        from models.texture import build_bank

        texture = build_bank(pop_pipe.vae, pop_pipe.normalization, np.asarray(x_db, np.float32),
                             [users[int(k)] for k in labels], **pop_pipe.texture.options())
    pipe = DopplerPipeline(vae=pop_pipe.vae, denoiser=pop_pipe.denoiser, user_encoder=enc,
                           scheduler_config=dict(pop_pipe.scheduler_config), meta=meta,
                           condition_encoder=pop_pipe.condition_encoder, texture=texture)
    return pipe, dict(loss_first=log["loss_first"], loss_last=log["loss_last"])
