"""Confidence intervals for repeated measurements: Student-t intervals of a mean and of paired differences.

The augmentation runs repeat each setting over seeds; a gain is a paired difference (augmented - real-only on
the same k selection and classifier seed), so its interval is the t-interval of the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample std and the two-sided Student-t interval mean ± t_{(1+c)/2, n-1} · std / sqrt(n).

    With one value the interval is undefined (NaN bounds). `excludes_zero` says whether 0 lies outside it.
    """
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return dict(mean=math.nan, std=math.nan, n=0, lo=math.nan, hi=math.nan, half_width=math.nan,
                    confidence=confidence, excludes_zero=False)
    mean = float(v.mean())
    if n < 2:
        return dict(mean=mean, std=0.0, n=1, lo=math.nan, hi=math.nan, half_width=math.nan,
                    confidence=confidence,
                    excludes_zero=False)
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    lo, hi = mean - half, mean + half
    return dict(mean=mean, std=std, n=n, lo=lo, hi=hi, half_width=half, confidence=confidence,
                excludes_zero=bool(lo > 0 or hi < 0))


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """t-interval of the per-pair differences a_i - b_i (same seeds, same order)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same length, got {a.shape} and {b.shape}")
    return t_interval(a - b, confidence)


def format_ci(ci: dict[str, float], scale: float = 100.0, unit: str = "") -> str:
    """'+5.4 [+2.1, +8.7]' (values times `scale`, e.g. accuracy fractions as points)."""
    if not math.isfinite(ci.get("mean", math.nan)):
        return "n/a"
    if not math.isfinite(ci.get("lo", math.nan)):
        return f"{scale * ci['mean']:+.1f}{unit} (n = {ci['n']})"
    return f"{scale * ci['mean']:+.1f} [{scale * ci['lo']:+.1f}, {scale * ci['hi']:+.1f}]{unit}"
