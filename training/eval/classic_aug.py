"""Classic spectrogram augmentation, the cheap alternative to a generator (baseline (b) of
training/eval/baselines.py).

Transforms on dB arrays (N, C, H = Doppler, W = time), in torch:
- `time_mask`, `freq_mask`: SpecAugment (Park et al., Interspeech 2019): `n_masks` bands of up to `width` of
  the axis set to the spectrogram's mean. torchaudio's TimeMasking/FrequencyMasking do the same, but
  torchaudio has no build for the pinned torch, so the masks are written here in a few lines of torch.
- `time_shift`: a random circular shift along time (gait phase is arbitrary).
- `mixup`: Zhang et al. (ICLR 2018), lambda ~ Beta(alpha, alpha), between two recordings of the *same* person
  (the reference classifier takes hard labels).
- `noise`: additive Gaussian noise of `noise_db` dB standard deviation.
Every output is clipped to the data's range [-dyn_range_db, 0]. Each transform's strength is tuned once on the
population (never on the targets) by `tune`; `all` combines them at their tuned strengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

TRANSFORMS = ("time_mask", "freq_mask", "time_shift", "mixup", "noise")
# strengths tried by `tune` (time_shift has none: uniform over the whole time axis)
GRID: dict[str, tuple[float, ...]] = dict(time_mask=(0.1, 0.2, 0.35), freq_mask=(0.05, 0.1, 0.2),
                                          mixup=(0.2, 0.4, 1.0), noise=(1.0, 3.0, 6.0))


@dataclass(frozen=True)
class ClassicConfig:
    transforms: tuple[str, ...] = TRANSFORMS  # which are applied, in TRANSFORMS order
    time_mask: float = 0.2  # widest time mask, as a fraction of the time axis
    freq_mask: float = 0.1  # widest frequency mask, as a fraction of the Doppler axis
    n_masks: int = 2  # masks per axis
    mixup: float = 0.4  # Beta(alpha, alpha) of the mixing weight
    noise: float = 3.0  # noise std in dB

    def __post_init__(self):
        unknown = [t for t in self.transforms if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; choose from {TRANSFORMS}")
        object.__setattr__(self, "transforms", tuple(t for t in TRANSFORMS if t in self.transforms))

    def only(self, name: str) -> ClassicConfig:
        return replace(self, transforms=TRANSFORMS if name == "all" else (name,))

    def describe(self) -> str:
        parts = {"time_mask": f"time masks {self.n_masks} x <= {self.time_mask:g}",
                 "freq_mask": f"frequency masks {self.n_masks} x <= {self.freq_mask:g}",
                 "time_shift": "circular time shift", "mixup": f"same-person mixup alpha {self.mixup:g}",
                 "noise": f"noise {self.noise:g} dB"}
        return ", ".join(parts[t] for t in self.transforms)


def _mask(x: torch.Tensor, dim: int, width: float, n: int, gen: torch.Generator) -> torch.Tensor:
    size = x.shape[dim]
    fill = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    pos = torch.arange(size).view(*([1] * dim), size, *([1] * (3 - dim)))  # broadcast along `dim`
    for _ in range(n):
        w = (torch.rand(x.shape[0], generator=gen) * width * size).long()  # (N,) widths in [0, width * size)
        start = (torch.rand(x.shape[0], generator=gen) * (size - w + 1)).long()
        shape = (-1,) + (1,) * 3
        hit = (pos >= start.view(shape)) & (pos < (start + w).view(shape))
        x = torch.where(hit, fill, x)
    return x


def apply(x_db: torch.Tensor, partner_db: torch.Tensor, lam: np.ndarray, cfg: ClassicConfig,
          gen: torch.Generator, dyn_range_db: float) -> torch.Tensor:
    """The configured transforms on a batch (N, C, H, W) of dB spectrograms; mixup blends in `partner_db`
    (same shape: the same persons' other recordings) with weights 1 - lam (N,)."""
    x = x_db.clone()
    t = x.shape[-1]
    on = set(cfg.transforms)
    if "mixup" in on:
        w = torch.as_tensor(np.asarray(lam, np.float32)).view(-1, 1, 1, 1)
        x = w * x + (1 - w) * partner_db
    if "time_shift" in on:
        shifts = torch.randint(0, t, (len(x),), generator=gen)
        idx = (torch.arange(t)[None] + shifts[:, None]) % t
        x = torch.gather(x, 3, idx[:, None, None, :].expand_as(x))
    if "time_mask" in on:
        x = _mask(x, 3, cfg.time_mask, cfg.n_masks, gen)
    if "freq_mask" in on:
        x = _mask(x, 2, cfg.freq_mask, cfg.n_masks, gen)
    if "noise" in on:
        x = x + cfg.noise * torch.randn(x.shape, generator=gen)
    return x.clamp(-float(dyn_range_db), 0.0)


def augment(x_db: np.ndarray, labels: np.ndarray, m_per_user: int, cfg: ClassicConfig, seed: int,
            dyn_range_db: float, persons: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """m_per_user augmented copies per person (user-major) of that person's recordings in x_db: each copy
    starts from one of them (in turn) and mixup partners are drawn among the same person's."""
    labels = np.asarray(labels, np.int64)
    persons = np.unique(labels) if persons is None else np.asarray(persons)
    rng = np.random.default_rng([seed, 0xC1A5])
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    src, partner = [], []
    for c in persons:
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            raise ValueError(f"person {c} has no recording to augment")
        src.append(idx[np.arange(m_per_user) % len(idx)])
        partner.append(rng.choice(idx, size=m_per_user))
    s, p = np.concatenate(src), np.concatenate(partner)
    x = torch.as_tensor(np.asarray(x_db, np.float32))
    lam = rng.beta(cfg.mixup, cfg.mixup, size=len(s)) if cfg.mixup > 0 else np.ones(len(s))
    out = apply(x[s], x[p], lam, cfg, gen, dyn_range_db).numpy()
    return out.astype(np.float32), labels[s]


# ---- tuning on the population ------------------------------------------------------------------------------
# score(x, y, seed, n_total) -> held-out accuracy of the reference classifier trained on (x, y) at the budget
# for n_total recordings
Score = Callable[[np.ndarray, np.ndarray, int, int], float]


def tune(x_k: np.ndarray, y_k: np.ndarray, m_per_user: int, score: Score, dyn_range_db: float, *,
         seeds: tuple[int, ...] = (0,), grid: dict[str, tuple[float, ...]] | None = None,
         base: ClassicConfig | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Pick each transform's strength on population data: k recordings per population person (x_k, y_k), m
    augmented per person added (the k repeated to balance, as in the protocol), scored on held-out population
    recordings. Returns the tuned config and every score."""
    grid, base = GRID if grid is None else grid, base or ClassicConfig()
    reps = max(1, round(m_per_user / max(1, np.bincount(np.asarray(y_k)).max())))
    n_total = len(y_k) + m_per_user * len(np.unique(y_k))

    def run(cfg: ClassicConfig) -> float:
        accs = []
        for s in seeds:
            xa, ya = augment(x_k, y_k, m_per_user, cfg, s, dyn_range_db)
            accs.append(score(np.concatenate([x_k] * reps + [xa]), np.concatenate([y_k] * reps + [ya]), s,
                              n_total))
        return float(np.mean(accs))

    rows, best = [], {}
    for name, values in grid.items():
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r} in the tuning grid")
        scored = [(run(replace(base, transforms=(name,), **{name: v})), v) for v in values]
        rows += [dict(transform=name, value=v, accuracy=a) for a, v in scored]
        best[name] = max(scored)[1]  # ties: the larger strength
        log(f"classic augmentation tuning: {name} " + ", ".join(f"{v:g} -> {a:.3f}" for a, v in scored))
    tuned = replace(base, **best)
    return dict(config=asdict(tuned), scores=rows, seeds=list(seeds), tuned=tuned)
