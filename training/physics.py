"""Kinematic read-outs of a micro-Doppler spectrogram: torso line, upper envelope, gait periodicity.

They work on any (doppler, time) dB image with its axes, so the simulator's tests and the evaluator
(on generated 64x64 images, axes from the dataset's meta.json) use the same estimators.
Ref: the envelope/cadence features of Erol, Gurbuz & Amin, "Kinematic fidelity" (TAES 2020).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SPEED_OF_LIGHT = 299_792_458.0


def axes_from_meta(meta: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(doppler_hz (D,), time_s (T,)) for an image of `shape` from a dataset's meta.json."""
    d, t = shape
    if "doppler_hz" in meta and len(meta["doppler_hz"]) == d:
        doppler = np.asarray(meta["doppler_hz"], dtype=float)
    else:
        top = float(meta["doppler_hz_row0"])
        step = float(meta["doppler_hz_per_bin"])
        sign = -1.0 if str(meta.get("doppler_axis", "descending")).startswith("desc") else 1.0
        doppler = top + sign * step * np.arange(d)
    time_s = (np.arange(t) + 0.5) * float(meta["seconds_per_frame"])
    return doppler, time_s


def _descending(db: np.ndarray, doppler_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the image with row 0 = most positive Doppler, whatever its orientation."""
    db = np.asarray(db, dtype=np.float64)
    if db.ndim != 2 or db.shape[0] != len(doppler_hz):
        raise ValueError(f"expected a (doppler, time) image with {len(doppler_hz)} rows, got {db.shape}")
    if doppler_hz[0] < doppler_hz[-1]:
        return db[::-1], np.asarray(doppler_hz)[::-1]
    return db, np.asarray(doppler_hz)


def torso_line_hz(db: np.ndarray, doppler_hz: np.ndarray, exclude_hz: float | None = None,
                  band: float = 0.2) -> np.ndarray:
    """Per-frame Doppler of the strongest persistent line (the torso).

    The line's typical Doppler is the median over frames of each frame's strongest bin; each frame is then
    searched within +-band of it (so a leg that briefly out-shines the torso is not taken) and refined by
    parabolic interpolation of the dB peak. Bins with |f| < exclude_hz (default: one bin) are ignored (clutter).
    """
    db, f = _descending(db, doppler_hz)
    step = abs(f[1] - f[0])
    exclude_hz = step if exclude_hz is None else exclude_hz
    p = np.where(np.abs(f)[:, None] < exclude_hz, 0.0, 10 ** (db / 10))
    f_med = float(np.median(f[p.argmax(axis=0)]))
    half = max(abs(f_med) * band, 1.5 * step)
    p = np.where(np.abs(f - f_med)[:, None] <= half, p, 0.0)
    k = np.clip(p.argmax(axis=0), 1, len(f) - 2)  # (T,)
    cols = np.arange(db.shape[1])
    # Parabolic peak interpolation on dB: sub-bin precision without a strong neighbour dragging it.
    y0, y1, y2 = db[k - 1, cols], db[k, cols], db[k + 1, cols]
    curv = y0 - 2 * y1 + y2
    shift = np.where(curv < 0, 0.5 * (y0 - y2) / np.where(curv < 0, curv, -1.0), 0.0)
    return f[k] + np.clip(shift, -0.5, 0.5) * (f[1] - f[0])


def upper_envelope_hz(db: np.ndarray, doppler_hz: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Per-frame highest Doppler whose level is >= threshold_db (relative to the image peak) in two
    adjacent bins; the two-bin rule keeps isolated noise pixels from setting the envelope."""
    db, f = _descending(db, doppler_hz)
    above = db >= db.max() + threshold_db
    pair = above[:-1] & above[1:]  # (D-1, T): bin and the one just below it
    first = np.where(pair.any(axis=0), pair.argmax(axis=0), len(f) - 1)
    return f[first]


def envelope_period_s(envelope: np.ndarray, seconds_per_frame: float, min_s: float = 0.25,
                      max_s: float = 1.6) -> float:
    """Dominant period of the envelope: first autocorrelation peak after `min_s` (unbiased estimate,
    parabolic refinement). For a walk this is one step, i.e. half the gait cycle."""
    e = np.asarray(envelope, dtype=np.float64)
    e = e - e.mean()
    n = e.size
    ac = np.correlate(e, e, mode="full")[n - 1:] / (n - np.arange(n))  # unbiased
    ac = ac / max(ac[0], 1e-30)
    lo = max(1, int(np.floor(min_s / seconds_per_frame)))
    hi = min(n - 2, int(np.ceil(max_s / seconds_per_frame)), int(n * 0.75))
    peaks = [i for i in range(lo, hi + 1) if ac[i] >= ac[i - 1] and ac[i] >= ac[i + 1] and ac[i] > 0]
    if not peaks:
        return float("nan")
    i = peaks[0]
    y0, y1, y2 = ac[i - 1], ac[i], ac[i + 1]
    denom = y0 - 2 * y1 + y2
    shift = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
    return float((i + np.clip(shift, -0.5, 0.5)) * seconds_per_frame)


def kinematics(db: np.ndarray, doppler_hz: np.ndarray, seconds_per_frame: float, wavelength_m: float,
               threshold_db: float = -40.0) -> dict[str, float]:
    """Summary read-outs: torso speed, upper-envelope speed (95th percentile over time), their ratio,
    step period and gait cycle (= 2 steps), in m/s and seconds."""
    to_mps = wavelength_m / 2
    torso = float(np.mean(torso_line_hz(db, doppler_hz))) * to_mps
    env = upper_envelope_hz(db, doppler_hz, threshold_db)
    env_peak = float(np.percentile(env, 95)) * to_mps
    step = envelope_period_s(env, seconds_per_frame)
    return dict(torso_mps=torso, envelope_mps=env_peak, envelope_ratio=env_peak / torso if torso else float("nan"),
                step_s=step, cycle_s=2 * step)
