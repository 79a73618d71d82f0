"""The two stages of `dopplergen adapt` (training/adapt.py): the autoencoder fine-tuned to a user's radar,
then low-rank adapters on the UNet with new user rows and a prior-preservation term.

Stage 1 fine-tunes the decoder (or, `vae_part="all"`, encoder and decoder) on the user's recordings with the
train-vae loss (L1 in model space + KL), mixed half and half with the pipeline's own samples so its own people
stay drawable. Stage 2 is DreamBooth's recipe (Ruiz et al., CVPR 2023) with LoRA (Hu et al., ICLR 2022)
through peft, as diffusers' own `add_adapter`: the diffusion loss on the user's latents (their people's new
rows) plus `prior_weight` x the same loss on samples the pipeline drew of its own people before adapting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from models import autoencoder as ae
from models.conditions import encode_context
from models.losses import cache_latents, latent_loss, noised, time_shifts

LORA_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_CONV = ["conv1", "conv2"]
Log = Callable[[int, dict[str, float]], None]


def _batch(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=g)[:size] if size <= n else torch.randint(0, n, (size,), generator=g)


def finetune_vae(vae: Any, x_user: torch.Tensor, x_prior: torch.Tensor, *, steps: int, part: str, lr: float,
                 batch_size: int, kl_weight: float, seed: int, log: Log) -> None:
    """Stage 1 in place on `vae` (model-space images (N, C, H, W)): each batch half the user's, half the
    pipeline's own samples (`x_prior`; empty: the user's only)."""
    vae.train().requires_grad_(False)
    params = [p for name, p in vae.named_parameters()
              if part == "all" or name.startswith(("decoder.", "post_quant_conv."))]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    half = batch_size // 2 if len(x_prior) else batch_size
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 100_003 + step)
        xb = x_user[_batch(len(x_user), half, g)]
        if len(x_prior):
            xb = torch.cat([xb, x_prior[_batch(len(x_prior), batch_size - half, g)]])
        post = vae.encode(xb.to(vae.device)).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(vae.device)
        rec = vae.decode(z).sample
        l1 = (rec - xb.to(vae.device)).abs().mean()
        kl = post.kl().mean() / post.mean[0].numel()
        loss = l1 + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log(step, {"vae_loss": loss.item(), "vae_l1": l1.item()})
    vae.eval().requires_grad_(False)


def condition_values(pipe: Any, extra: dict[str, np.ndarray], drop_prob: float) -> Callable | None:
    """For a pipeline with conditions: the user's recordings' condition values as sampling gives a person the
    pipeline has no per-person statistics for: a manifest column where the data has one (e.g. speed_mps),
    else a draw from the pipeline's whole training distribution, but for the activity, which is left absent
    (a drawn "fall" would label a walk); each absent with `drop_prob` (classifier-free guidance dropout, as in
    training). None for a pipeline without conditions."""
    from models.condition_stats import draw_condition
    from models.conditions import drop_conditions

    enc, desc = pipe.condition_encoder, pipe.meta.get("conditions") or {}
    if enc is None or not all(n in desc for n in enc.names):
        return None
    cols = {n: extra[n] for n in enc.names if n in extra}

    def values(idx: np.ndarray, g: torch.Generator) -> torch.Tensor:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        rows = [{n: (cols[n][i].item() if n in cols else None if n == "activity"
                     else draw_condition(desc[n], "", rng)) for n in enc.names} for i in idx]
        return drop_conditions(enc.values_tensor(rows), drop_prob, g)
    return values


@torch.no_grad()
def measured_scaling(vae: Any, x: torch.Tensor) -> float:
    """1 / std of the unscaled latent means of x: the scaling factor train-vae measures (never
    hard-coded)."""
    mean, _ = ae.posterior(vae, x)
    return float(1.0 / mean.float().std().clamp_min(1e-6))


def add_lora(unet: nn.Module, rank: int, conv: bool) -> list[nn.Parameter]:
    """peft LoRA adapters on the UNet's attention projections (and its ResNet convolutions with `conv`), added
    with diffusers' own `add_adapter`; returns the trainable adapter weights (all else frozen)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    targets = LORA_ATTENTION + (LORA_CONV if conv else [])
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=targets))
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params


def merge_lora(unet: nn.Module) -> None:
    """Fold the adapters into the UNet's weights and remove them: a plain UNet2DConditionModel again."""
    unet.fuse_lora(lora_scale=1.0)
    unet.unload_lora()


class RowTrainer(nn.Module):
    """The user encoder's table with only the rows from `first_new` on trainable (the pipeline's own rows and
    the null row are fixed): a frozen copy plus a parameter for the new rows."""

    def __init__(self, encoder: Any, first_new: int, n_new: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.first_new = first_new
        self.new = nn.Parameter(encoder.embedding.weight.detach()[first_new:first_new + n_new].clone())

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        table = self.encoder.embedding.weight
        full = torch.cat([table[:self.first_new], self.new, table[self.first_new + len(self.new):]])
        return full[idx]

    def context(self, idx: torch.Tensor, condition_encoder: Any, values: torch.Tensor | None = None
                ) -> torch.Tensor:
        tokens = self.encoder.tokens(self.rows(idx))
        if condition_encoder is None:
            return tokens
        return encode_context(_Fixed(tokens), condition_encoder, idx, values)

    def table(self) -> torch.Tensor:
        with torch.no_grad():
            return self.rows(torch.arange(self.encoder.null_index))


class _Fixed(nn.Module):
    """Stands in for the user encoder in encode_context: returns tokens already made."""

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self._tokens = tokens

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self._tokens


def train_adapters(pipe: Any, rows: RowTrainer, lora: list[nn.Parameter], x_user: torch.Tensor,
                   y_user: torch.Tensor, x_prior: torch.Tensor, y_prior: torch.Tensor, *, steps: int,
                   lr: float, row_lr: float, batch_size: int, prior_weight: float, null_prob: float,
                   shifts: int, seed: int, log: Log, values_fn: Callable | None = None) -> None:
    """Stage 2: the diffusion loss on the user's latents + prior_weight x on the prior's, through the LoRA
    UNet; trains the adapters and the new rows. Images are model-space (N, C, H, W); labels index `rows`.
    `values_fn(recording indices, generator) -> (B, K)`: the user's rows' condition values (None: absent), as
    sampling will give them; the prior's samples were drawn with every condition absent, and train so."""
    vae, unet = pipe.vae, pipe.unet
    sched = DDPMScheduler.from_config(pipe.scheduler_config)
    num_t = sched.config.num_train_timesteps
    shift_list = time_shifts(x_user.shape[-1], shifts)
    caches = [cache_latents(vae, x, shift_list) if len(x) else None for x in (x_user, x_prior)]
    null = rows.encoder.null_index
    opt = torch.optim.AdamW([{"params": lora, "lr": lr}, {"params": [rows.new], "lr": row_lr}],
                            weight_decay=0.0)
    unet.train()

    def loss_on(cache, labels, n: int, g: torch.Generator, values_fn=None) -> torch.Tensor:
        mean, std = cache
        idx = _batch(mean.shape[1], n, g)
        s = torch.randint(0, mean.shape[0], (n,), generator=g)
        z0 = ae.scale(vae, mean[s, idx] + std[s, idx] * torch.randn(mean[s, idx].shape, generator=g))
        user = labels[idx].clone()
        user[torch.rand(n, generator=g) < null_prob] = null
        values = None
        if values_fn is not None:
            values = values_fn(idx.numpy(), g)
            values[user == null] = float("nan")  # the guidance branch: every condition absent, as in training
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, num_t, (n,), generator=g)
        z_t, target = noised(sched, z0.to(unet.device), noise.to(unet.device), t.to(unet.device))
        context = rows.context(user.to(unet.device), pipe.condition_encoder, values)
        pred = unet(z_t, t.to(unet.device), encoder_hidden_states=context).sample
        return latent_loss(sched, pred, target, t.to(unet.device), 0.0).mean()

    params = lora + [rows.new]
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 100_003 + 7 + step)
        user_loss = loss_on(caches[0], y_user, batch_size, g, values_fn)
        loss = user_loss
        terms = {"unet_loss": user_loss.item()}
        if caches[1] is not None and prior_weight > 0:
            prior_loss = loss_on(caches[1], y_prior, batch_size, g)
            loss = loss + prior_weight * prior_loss
            terms["prior_loss"] = prior_loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log(step, terms)
    unet.eval()


def prior_samples(pipe: Any, per_user: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`per_user` samples of each of the pipeline's own people, drawn before adapting: (dB (N, C, H, W), user
    indices (N,))."""
    from models.sampling import sample

    if per_user <= 0:
        return np.zeros((0, pipe.channels, *pipe.image_size), np.float32), np.zeros(0, np.int64)
    users = np.repeat(np.arange(len(pipe.users)), per_user)
    seeds = [seed * 1_000_003 + i for i in range(len(users))]
    out = []
    for i in range(0, len(users), 32):
        out.append(sample(pipe, users[i:i + 32].tolist(), seeds[i:i + 32], num_inference_steps=steps,
                          guidance_scale=float(pipe.meta.get("guidance_scale", 2.0))).numpy())
    return np.concatenate(out).astype(np.float32), users.astype(np.int64)
