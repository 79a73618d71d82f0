"""Stage 1's texture bank: decode the mean, add a measured texture (docs/evaluation.md has its measurement).

Speckle is incompressible. The VAE's decoder returns a smooth mean, and a fresh classifier tells it from a
real spectrogram every time: two-sample accuracy 1.000, for generated samples and plain reconstructions alike.
Two texture *models* did not close that gap (docs/evaluation.md, "Stage 1"). A Gaussian-copula field fitted to
the residuals' spectrum and quantiles scored 0.986, and an adversarially trained noise-injection refiner
0.988-0.998.

The bank does not model the texture; it keeps it. It stores, for real training recordings x, the
reconstruction D(E(x)) and the residual x - D(E(x)): the part of the recording that stage 1 cannot carry (its
speckle, the noise floor, and the decoder's own blur of its limb traces). `add` puts one residual on each
decoded sample, the one that fits it. Among the entries of other people (`source="population"`, the default;
up to POPULATION_POOL of them, drawn), or of the sample's own person (`source="own"`), or 32 drawn from the
whole bank for a person without entries, over every circular shift in time, it takes the `choices`
reconstructions nearest to the sample (L2, via an FFT cross-correlation). It draws one of them and adds that
recording's residual, shifted the same way, so the corrections land on the traces they belong to. The result
is clipped to the data's dB range.

Measured on the demo (docs/evaluation.md, "The texture bank"), a fresh CNN's two-sample accuracy against real
recordings fell from 0.992 to 0.833 with a bank of one half of the train split, tested on the other half. In
the evaluator's report, where the bank holds 20 per person, it fell from 1.000 to 0.891. With the person's own
residuals, samples sat nearer to that person's training recordings than new recordings of them do (5th
percentile of the distance to the closest record 0.93x for the demo's people, membership AUC 0.75 for people
enrolled from 5 recordings); other people's residuals remove most of that (docs/evaluation.md, "Privacy").

The draw comes from the row's own generator, after its denoising noise, so a sample stays a function of its
seed.

The bank holds a few recordings' pairs per person (`per_user`, fp16), saved as texture/ in the pipeline
folder (safetensors, diffusers layout). These are fragments of real data: a folder with a bank carries some of
its training set's noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from models import autoencoder as ae
from models.normalization import Normalization

DEFAULT_PER_USER = 20
FALLBACK_POOL = 32  # a person without entries is matched against this many entries of the whole bank, drawn
# Where a sample's residual comes from (docs/evaluation.md, "Privacy"). "population" (the default since
# issue 35): other people's entries (up to POPULATION_POOL of them, drawn), so a sample carries no recorded
# speckle of its own person and sits no nearer to their recordings than a new recording does; "own": the
# person's own entries (before issue 35; samples sat nearer to those recordings). A person without entries,
# or alone in the bank, draws from every entry. The shift: "fit" = the matched entry's best-fitting time
# shift; "random" = drawn.
SOURCES, SHIFTS = ("population", "own"), ("fit", "random")
POPULATION_POOL = 256  # the demo's bank has 180 other entries per person: all of them


class TextureBank(ModelMixin, ConfigMixin):
    """Reconstructions and residuals (N, C, H, W) in dB (fp16), with the person each came from
    (`users[owners[i]]`)."""

    @register_to_config
    def __init__(self, users: Sequence[str] = (), count: int = 0, channels: int = 1, height: int = 64,
                 width: int = 64, dyn_range_db: float = 60.0, roll_time: bool = True, choices: int = 3,
                 source: str = "population", shift: str = "fit"):
        super().__init__()
        if source not in SOURCES or shift not in SHIFTS:
            raise ValueError(f"texture bank: source must be one of {SOURCES}, shift one of {SHIFTS}")
        self.register_buffer("means", torch.zeros(count, channels, height, width, dtype=torch.float16))
        self.register_buffer("residuals", torch.zeros(count, channels, height, width, dtype=torch.float16))
        self.register_buffer("owners", torch.zeros(count, dtype=torch.int64))
        self._by_user: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_pairs(
        cls, means_db: np.ndarray | torch.Tensor, residuals_db: np.ndarray | torch.Tensor,
        owners: Sequence[str], dyn_range_db: float, per_user: int = DEFAULT_PER_USER, seed: int = 0,
        **options: Any,
    ) -> TextureBank:
        """Keep at most `per_user` (reconstruction, residual) pairs of each person (a seeded random
        choice)."""
        r = torch.as_tensor(np.asarray(residuals_db, dtype=np.float32))
        m = torch.as_tensor(np.asarray(means_db, dtype=np.float32))
        if r.ndim != 4 or m.shape != r.shape or len(r) != len(owners) or len(r) == 0:
            raise ValueError("need (N, C, H, W) reconstructions and residuals and N owners, got "
                             f"{tuple(m.shape)}, {tuple(r.shape)} and {len(owners)}")
        if per_user < 1:
            raise ValueError("per_user must be >= 1")
        names = sorted(set(owners))
        owners_a = np.asarray(owners)
        keep = per_user_pick(owners, per_user, seed)
        _, c, h, w = r.shape
        bank = cls(users=names, count=len(keep), channels=c, height=h, width=w,
                   dyn_range_db=float(dyn_range_db), **options)
        bank.means.copy_(m[keep].to(torch.float16))
        bank.residuals.copy_(r[keep].to(torch.float16))
        bank.owners.copy_(torch.as_tensor([names.index(u) for u in owners_a[keep]], dtype=torch.int64))
        return bank

    def merged(self, other: TextureBank) -> TextureBank:
        """This bank plus `other`'s people (theirs replace ours for a person both hold)."""
        if other.residuals.shape[1:] != self.residuals.shape[1:]:
            raise ValueError("texture banks of different image shapes")
        names_o = list(other.config.users)
        mine = [u not in names_o for u in (self.config.users[int(i)] for i in self.owners)]
        owners = [self.config.users[int(i)] for i, k in zip(self.owners, mine, strict=True) if k]
        owners += [names_o[int(i)] for i in other.owners]
        keep = torch.as_tensor(mine, dtype=torch.bool)
        m = torch.cat([self.means[keep], other.means]).float()
        r = torch.cat([self.residuals[keep], other.residuals]).float()
        return TextureBank.from_pairs(m, r, owners, self.config.dyn_range_db, per_user=len(r),
                                      **self.options())

    def without(self, users: Sequence[str]) -> TextureBank | None:
        """This bank less `users`' entries; None when nothing would be left."""
        gone = {self.config.users.index(u) for u in users if u in self.config.users}
        keep = torch.as_tensor([int(i) not in gone for i in self.owners], dtype=torch.bool)
        if not gone:
            return self
        if not bool(keep.any()):
            return None
        owners = [self.config.users[int(i)] for i in self.owners[keep]]
        return TextureBank.from_pairs(
            self.means[keep].float(), self.residuals[keep].float(), owners, self.config.dyn_range_db,
            per_user=int(keep.sum()), **self.options(),
        )

    def options(self) -> dict[str, Any]:
        """How this bank draws (roll_time, choices, source, shift): what a merged or reduced bank keeps."""
        return {k: self.config[k] for k in ("roll_time", "choices", "source", "shift")}

    def entries(self, user: str | None) -> torch.Tensor:
        """Bank indices to draw from for `user`: theirs, or every entry when the bank has none of theirs."""
        if self._by_user is None:
            self._by_user = {u: torch.nonzero(self.owners == k).flatten() for k,
                             u in enumerate(self.config.users)}
        mine = self._by_user.get(user) if user is not None else None
        return mine if mine is not None and len(mine) else torch.arange(len(self.owners))

    def add(self, x_db: torch.Tensor, users: Sequence[str | None], generators: Sequence[torch.Generator]
            ) -> torch.Tensor:
        """Decoded samples (N, C, H, W) dB -> the same plus one fitting residual each, clipped to [-dyn_range,
        0]."""
        if len(users) != len(x_db) or len(generators) != len(x_db):
            raise ValueError(f"got {len(x_db)} samples, {len(users)} users and {len(generators)} generators")
        if tuple(x_db.shape[1:]) != tuple(self.residuals.shape[1:]):
            raise ValueError(f"samples of shape {tuple(x_db.shape[1:])}, texture bank of "
                             f"{tuple(self.residuals.shape[1:])}")
        out = []
        for x, user, g in zip(x_db, users, generators, strict=True):
            pool = self.entries(user)
            cap = FALLBACK_POOL if user is None or user not in self._by_user else len(pool)
            if self.config.source == "population" and user is not None and user in self._by_user:
                others = torch.nonzero(self.owners != self.config.users.index(user)).flatten()
                pool, cap = (others, POPULATION_POOL) if len(others) else (pool, cap)
            if len(pool) > cap:
                pool = pool[torch.randperm(len(pool), generator=g)[:cap]]
            j, shift = self._pick(x.float().cpu(), pool, g)
            if self.config.shift == "random":
                shift = int(torch.randint(self.residuals.shape[-1], (1,), generator=g))
            r = torch.roll(self.residuals[pool[j]].float(), shift, dims=-1)
            out.append(x.float() + r.to(x.device))
        return torch.stack(out).clamp(-float(self.config.dyn_range_db), 0.0).to(x_db.dtype)


    def _pick(self, x: torch.Tensor, pool: torch.Tensor, g: torch.Generator) -> tuple[int, int]:
        """(entry of `pool`, time shift): one of the `choices` (entry, shift) pairs whose shifted
        reconstruction is nearest to x in L2. ||x - roll(m, k)||^2 = |x|^2 + |m|^2 - 2 c(k), c = the circular
        cross-correlation."""
        m = self.means[pool].float()  # (n, C, H, W)
        if self.config.roll_time:
            c = torch.fft.ifft(torch.fft.fft(x, dim=-1)[None] * torch.fft.fft(m, dim=-1).conj(), dim=-1).real
            d = m.pow(2).sum((1, 2, 3))[:, None] - 2 * c.sum((1, 2))  # (n, W)
        else:
            d = (m.pow(2).sum((1, 2, 3)) - 2 * (m * x).sum((1, 2, 3)))[:, None]  # (n, 1): no shift
        best = torch.topk(-d.flatten(), min(int(self.config.choices), d.numel())).indices
        pick = int(best[int(torch.randint(len(best), (1,), generator=g))])
        return pick // d.shape[1], pick % d.shape[1]


def per_user_pick(owners: Sequence[str], per_user: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `per_user` entries of each person (a seeded random choice)."""
    rng = np.random.default_rng(seed)
    owners_a = np.asarray(list(owners))
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(owners_a == u))[:per_user]
                                   for u in sorted(set(owners_a.tolist()))]))


@torch.no_grad()
def reconstructions(vae: ae.Autoencoder, norm: Normalization, x_db: np.ndarray | torch.Tensor,
                    batch_size: int = 64
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(E(x)), x - D(E(x))) in dB for recordings x (N, C, H, W) dB: what stage 1 carries, and what it does
    not."""
    x = torch.as_tensor(np.asarray(x_db, dtype=np.float32))
    rec = norm.to_db(ae.reconstruct(vae, norm.to_model(x), batch_size))
    return rec, x.clamp(-float(norm.dyn_range_db), 0.0) - rec


def build_bank(vae: ae.Autoencoder, norm: Normalization, x_db: np.ndarray, owners: Sequence[str],
               per_user: int = DEFAULT_PER_USER, seed: int = 0, **options: Any) -> TextureBank:
    """A bank of `per_user` residuals per person from their recordings, through this stage 1 (`options`: how
    it draws, TextureBank's roll_time, choices, source, shift)."""
    owners_a = np.asarray(list(owners))
    pick = per_user_pick(owners, per_user, seed)
    return TextureBank.from_pairs(
        *reconstructions(vae, norm, np.asarray(x_db)[pick]), list(owners_a[pick]), norm.dyn_range_db,
        per_user=per_user, seed=seed, **options,
    )
