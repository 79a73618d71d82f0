"""Stage-1 texture lever: a perceptual loss in a spectrogram feature space (LPIPS-style, Zhang et al. 2018).

The network is training.eval.classifier's UserCNN, trained for a few hundred steps on the train split's user
labels at the start of the run (deterministic for a seed, so a resumed run rebuilds the same one), then frozen.
The loss compares the unit-normalised (over channels) activations after each of its four conv blocks:
mean over blocks of mean over (N, h, w) of sum over channels of the squared difference; 0 for identical inputs,
at most 4. No learned per-channel weights (LPIPS's "lin" layers): there are no human judgements to fit them to.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.eval.classifier import UserCNN, train_classifier


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class SpectrogramPerceptual(nn.Module):
    """Frozen UserCNN trunk; forward(a, b) on model-space images (N, C, H, W) returns the scalar distance."""

    def __init__(self, net: UserCNN):
        super().__init__()
        self.trunk = net.trunk.eval().requires_grad_(False)
        # the taps: after each block's ReLU (the trunk holds conv, BN, ReLU [, max-pool] x 4)
        self.taps = {i for i, m in enumerate(self.trunk) if isinstance(m, nn.ReLU)}

    def train(self, mode: bool = True):  # always eval: BatchNorm keeps the classifier's running statistics
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, m in enumerate(self.trunk):
            x = m(x)
            if i in self.taps:
                out.append(_unit(x))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.features(a), self.features(b)
        return torch.stack([(x - y).pow(2).sum(dim=1).mean() for x, y in zip(fa, fb, strict=True)]).mean()


def fit_perceptual(x_db: np.ndarray, labels: np.ndarray, num_classes: int, dyn_range_db: float, *, seed: int,
                   steps: int) -> SpectrogramPerceptual:
    """Train the user classifier (at least `steps` optimiser steps, CPU, one thread) and wrap it, frozen.
    ReLU(inplace) in the trunk is harmless here: the taps are normalised copies."""
    clf = train_classifier(x_db, labels, num_classes, dyn_range_db=dyn_range_db, seed=seed, epochs=1, min_steps=steps)
    return SpectrogramPerceptual(clf.net)
