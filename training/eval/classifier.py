"""Reference user-ID classifier: a small CNN on dB spectrograms (the yardstick for augmentation and FD).

The convolutional trunk pools over time only at the end, keeping the Doppler (speed) profile: the
penultimate 64-d features are a per-recording gait descriptor used for Frechet distances.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.normalization import Normalization


def _block(c_in: int, c_out: int, stride: int = 1, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


@contextmanager
def single_thread(n: int = 1):
    """Run torch ops with n intra-op threads, then restore. This net is too small to gain from more, and on
    a shared 2-core box extra threads spinning against other processes made a training step ~50x slower."""
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class UserCNN(nn.Module):
    """Stride-2 5x5 stem, 3 conv blocks (w-2w-4w-4w ch, 2 max-pools) -> mean over time -> 8 Doppler bands
    -> 64-d features -> classes. Small on purpose: ~1k images train in well under a minute on 2 cores."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 8, feature_dim: int = 64):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            *_block(in_channels, w, stride=2, k=5),  # (N, w, H/2, W/2)
            *_block(w, 2 * w), nn.MaxPool2d(2),  # (N, 2w, H/4, W/4)
            *_block(2 * w, 4 * w), nn.MaxPool2d(2),  # (N, 4w, H/8, W/8)
            *_block(4 * w, 4 * w),
        )
        self.doppler_pool = nn.AdaptiveAvgPool1d(8)  # any input height -> 8 Doppler bands
        self.embed = nn.Sequential(nn.Linear(4 * w * 8, feature_dim), nn.ReLU(inplace=True), nn.Dropout(0.2))
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x).mean(dim=3)  # (N, C, H'): average over time (gait phase does not matter)
        return self.embed(self.doppler_pool(h).flatten(1))  # (N, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class Classifier:
    """A trained UserCNN with its input normalisation; inputs are dB arrays (N, C, H, W) or (N, H, W)."""

    net: UserCNN
    norm: Normalization
    num_classes: int

    def _prep(self, x_db: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x_db, dtype=np.float32))
        return self.norm.to_model(x[:, None] if x.ndim == 3 else x)

    @torch.no_grad()
    def _batched(self, fn, x_db, batch_size: int = 256) -> torch.Tensor:
        self.net.eval()
        x = self._prep(x_db)
        with single_thread():
            return torch.cat([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def logits(self, x_db: np.ndarray | torch.Tensor) -> np.ndarray:
        return self._batched(self.net, x_db).numpy()

    def predict(self, x_db: np.ndarray | torch.Tensor) -> np.ndarray:
        """Predicted label per spectrogram, int64 (N,)."""
        return self.logits(x_db).argmax(axis=1).astype(np.int64)

    def features(self, x_db: np.ndarray | torch.Tensor) -> np.ndarray:
        """Penultimate-layer features, float32 (N, 64): for Frechet distance / MMD between sets."""
        return self._batched(self.net.features, x_db).numpy()


def _augment(x: torch.Tensor, gen: torch.Generator, time_flip: bool = True) -> torch.Tensor:
    """Random circular time shift per sample (gait phase is arbitrary) and a random left-right flip of
    time (off for activity labels: sitting down reversed is not standing up, but it is not sitting either)."""
    n, t = x.shape[0], x.shape[-1]
    shifts = torch.randint(0, t, (n,), generator=gen)
    idx = (torch.arange(t)[None] + shifts[:, None]) % t  # (N, T)
    x = torch.gather(x, 3, idx[:, None, None, :].expand_as(x))
    flip = torch.rand(n, generator=gen) < 0.5
    if not time_flip:  # the draw is kept, so the rest of the run's stream is the same
        return x
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def train_classifier(x_db: np.ndarray, labels: np.ndarray, num_classes: int, *, dyn_range_db: float,
                     epochs: int = 20, seed: int = 0, batch_size: int = 64, lr: float = 3e-3,
                     weight_decay: float = 1e-3, augment: bool = True, threads: int | None = None,
                     min_steps: int = 150, time_flip: bool = True) -> Classifier:
    """Train the reference CNN (AdamW + one-cycle LR, label smoothing); deterministic for a seed on the CPU.

    At least `min_steps` optimiser steps are taken (epochs are raised for tiny sets, e.g. 5 per user).
    """
    with single_thread(threads or 1):
        return _train(x_db, labels, num_classes, dyn_range_db, epochs, seed, batch_size, lr, weight_decay,
                      augment, min_steps, time_flip)


def _train(x_db, labels, num_classes, dyn_range_db, epochs, seed, batch_size, lr, weight_decay, augment,
           min_steps, time_flip=True) -> Classifier:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    norm = Normalization(dyn_range_db)
    x = norm.to_model(torch.as_tensor(np.asarray(x_db, dtype=np.float32)))
    x = x[:, None] if x.ndim == 3 else x
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need as many labels as spectrograms (got {len(x)} and {len(y)})")
    net = UserCNN(num_classes, in_channels=x.shape[1])
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            b = perm[i:i + batch_size]
            xb = _augment(x[b], gen, time_flip) if augment else x[b]
            loss = F.cross_entropy(net(xb), y[b], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return Classifier(net=net, norm=norm, num_classes=num_classes)


def accuracy(clf: Classifier, x_db: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of spectrograms whose predicted user is the label."""
    labels = np.asarray(labels)
    return float((clf.predict(x_db) == labels).mean()) if len(labels) else float("nan")
