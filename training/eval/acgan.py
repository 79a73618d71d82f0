"""The field's generator as a baseline (c) of training/eval/baselines.py: an auxiliary-classifier GAN (ACGAN;
Odena, Olah & Shlens, ICML 2017) with DCGAN layers (Radford et al., ICLR 2016), the design Erol, Gurbuz & Amin
(IEEE TAES 2020) used for micro-Doppler, scaled to the image size, in plain torch.

- Generator: noise z (nz) times a learnt class embedding -> linear -> (8w, H/16, W/16) at 64x64 -> stride-2
  transposed convolutions with batch norm and ReLU, halving the channels -> tanh in the model space [-1, 1].
- Discriminator: stride-2 convolutions with LeakyReLU 0.2 (batch norm after the first, dropout as in ACGAN) ->
  two heads on the last features: real/fake (1 logit) and the auxiliary class (num_classes logits).
- Training: the ACGAN objective (adversarial BCE + auxiliary cross-entropy on real and fake for D, adversarial
  + auxiliary for G), Adam 2e-4, betas (0.5, 0.999), class-balanced batches (every class equally often, so
  the targets' k recordings are not drowned by the population's).
`pretrain` fits the population's classes; `finetune` continues on population + targets' k recordings with the
target classes' embeddings started at the mean of the population's.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def plan(image_size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """(stride-2 stages, the first feature map's (h, w)): halve both sides while they stay even and >= 8,
    at most 4 times (64x64 -> 4 stages from 4x4)."""
    h, w = image_size
    n = 0
    while n < 4 and h % 2 == 0 and w % 2 == 0 and min(h, w) >= 8:
        h, w, n = h // 2, w // 2, n + 1
    if n == 0:
        raise ValueError(f"image size {image_size} is too small or odd for the ACGAN")
    return n, (h, w)


class Generator(nn.Module):
    def __init__(self, num_classes: int, image_size: tuple[int, int], channels: int = 1, nz: int = 100,
                 width: int = 16):
        super().__init__()
        n, (h0, w0) = plan(image_size)
        self.nz, self.h0, self.w0, self.c0 = nz, h0, w0, width * 2 ** (n - 1)
        self.embed = nn.Embedding(num_classes, nz)
        n0 = self.c0 * h0 * w0
        self.fc = nn.Sequential(nn.Linear(nz, n0), nn.BatchNorm1d(n0), nn.ReLU())
        layers: list[nn.Module] = []
        c = self.c0
        for i in range(n):
            last = i == n - 1
            c_out = channels if last else c // 2
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        self.up = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(z * self.embed(labels))
        return self.up(h.view(-1, self.c0, self.h0, self.w0))  # (N, C, H, W) in [-1, 1]


class Discriminator(nn.Module):
    def __init__(self, num_classes: int, image_size: tuple[int, int], channels: int = 1, width: int = 16,
                 dropout: float = 0.25):
        super().__init__()
        n, (h0, w0) = plan(image_size)
        layers: list[nn.Module] = []
        c = channels
        for i in range(n):
            c_out = width * 2 ** i
            layers.append(nn.Conv2d(c, c_out, 4, stride=2, padding=1, bias=i == 0))
            layers += ([] if i == 0 else [nn.BatchNorm2d(c_out)]) + [nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            c = c_out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.adv = nn.Linear(c * h0 * w0, 1)
        self.aux = nn.Linear(c * h0 * w0, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.trunk(x)
        return self.adv(f).squeeze(1), self.aux(f)  # (N,), (N, num_classes)


@dataclass(frozen=True)
class GanConfig:
    width: int = 16  # base channels of G and D (the published 64x64 design is wider; this is CPU-sized)
    nz: int = 100
    batch_size: int = 32
    lr: float = 2e-4
    # the budget measured on the demo (docs/evaluation.md, "Versus the alternatives"): 0.2 s a step on one CPU
    # thread, 2 min of pretraining and 36 s per trial
    pretrain_steps: int = 600  # on the population
    finetune_steps: int = 150  # on population + the targets' k, per trial


@dataclass
class Gan:
    g: Generator
    d: Discriminator
    num_classes: int
    seconds: float = 0.0  # training wall time so far

    def state(self) -> dict[str, Any]:
        return dict(g=copy.deepcopy(self.g.state_dict()), d=copy.deepcopy(self.d.state_dict()),
                    num_classes=self.num_classes, seconds=self.seconds)


def build(num_classes: int, image_size: tuple[int, int], channels: int, cfg: GanConfig,
          state: dict[str, Any] | None = None) -> Gan:
    gan = Gan(Generator(num_classes, image_size, channels, cfg.nz, cfg.width),
              Discriminator(num_classes, image_size, channels, cfg.width), num_classes)
    if state is not None:
        gan.g.load_state_dict(state["g"])
        gan.d.load_state_dict(state["d"])
        gan.seconds = float(state["seconds"])
    return gan


def train(gan: Gan, x_model: np.ndarray, labels: np.ndarray, steps: int, cfg: GanConfig, seed: int) -> dict:
    """`steps` ACGAN updates on (x_model in [-1, 1], labels); class-balanced batches. Returns a loss log."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 0x6A4])
    x = torch.as_tensor(np.asarray(x_model, np.float32))
    y = np.asarray(labels, np.int64)
    classes = np.unique(y)
    by_class = {int(c): np.flatnonzero(y == c) for c in classes}
    opt_g = torch.optim.Adam(gan.g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(gan.d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    gan.g.train()
    gan.d.train()
    t0, losses = time.perf_counter(), []
    for _ in range(steps):
        c_real = rng.choice(classes, size=cfg.batch_size)
        idx = np.array([rng.choice(by_class[int(c)]) for c in c_real])
        xr, cr = x[idx], torch.as_tensor(c_real)
        cf = torch.as_tensor(rng.choice(classes, size=cfg.batch_size))
        fake = gan.g(torch.randn(cfg.batch_size, cfg.nz), cf)
        adv_r, aux_r = gan.d(xr)
        adv_f, aux_f = gan.d(fake.detach())
        # one-sided label smoothing on the real logits
        loss_d = (F.binary_cross_entropy_with_logits(adv_r, torch.full_like(adv_r, 0.9))
                  + F.binary_cross_entropy_with_logits(adv_f, torch.zeros_like(adv_f))
                  + F.cross_entropy(aux_r, cr) + F.cross_entropy(aux_f, cf))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        adv_g, aux_g = gan.d(fake)
        loss_g = (F.binary_cross_entropy_with_logits(adv_g, torch.ones_like(adv_g))
                  + F.cross_entropy(aux_g, cf))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses.append((loss_d.item(), loss_g.item()))
    secs = time.perf_counter() - t0
    gan.seconds += secs
    last = np.mean(losses[-20:], axis=0) if losses else (float("nan"), float("nan"))
    return dict(steps=steps, seconds=secs, loss_d_last=float(last[0]), loss_g_last=float(last[1]))


def init_classes_at_mean(gan: Gan, new: np.ndarray, old: np.ndarray) -> None:
    """New classes' generator embeddings start at the mean of the old classes' (as ours starts new user rows
    at the population's mean row)."""
    with torch.no_grad():
        w = gan.g.embed.weight
        w[torch.as_tensor(new)] = w[torch.as_tensor(old)].mean(0)


@torch.no_grad()
def sample(gan: Gan, labels: np.ndarray, seed: int, batch_size: int = 256) -> np.ndarray:
    """Generated (N, C, H, W) in the model space for the given class labels; seeded."""
    gan.g.eval()
    gen = torch.Generator().manual_seed(int(seed))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    z = torch.randn(len(y), gan.g.nz, generator=gen)
    out = [gan.g(z[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0,), np.float32)
