"""Metric functions for synthetic spectrograms, where Inception features (trained on photographs) do not
apply.

- Fréchet distance between Gaussian fits of feature sets (Heusel et al. 2017), in the features of a
  classifier trained on the domain instead of Inception.
- Classifier two-sample test (C2ST; Lopez-Paz & Oquab, ICLR 2017): held-out accuracy of a fresh
  real-vs-generated classifier; 0.5 = indistinguishable.
- VAE reconstruction PSNR/SSIM (torchmetrics) in normalised model space.
- Kinematic read-outs of one (doppler, time) dB image with its axes: torso line, upper envelope, gait
  periodicity (the envelope/cadence features of Erol, Gurbuz & Amin, "Kinematic fidelity", TAES 2020). The
  simulator's tests and the evaluator (generated images, axes from the dataset's meta.json) use the same ones.
- Per activity (training/data/activities.py; the event and gait-symmetry read-outs live in
  training/eval/activity_metrics.py and are re-exported here): a gait's torso speed, envelope and cadence,
  an event's peak torso speed and duration (`activity_readouts`).
- Kinematic consistency: relative errors of those read-outs between real and generated sets.
All functions are pure: arrays in, numbers out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import linalg

from models.dataset_folder import axes_from_meta
from training.data.activities import EVENTS
from training.data.radar import SPEED_OF_LIGHT
from training.eval.activity_metrics import (  # noqa: F401 (arm_band_db, step_asymmetry: re-exported)
    arm_band_db,
    descending,
    event_kinematics,
    gait_cycle_s,
    step_asymmetry,
)

# fit(x, y, seed) -> predict(x) -> labels; the two-sample test is generic over the classifier.
FitFn = Callable[[np.ndarray, np.ndarray, int], Callable[[np.ndarray], np.ndarray]]


# ---- Fréchet distance ----------------------------------------------------------------------------------
def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits (Heusel et al. 2017)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays of equal D, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError("need at least 2 samples per set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        # Fewer samples than feature dimensions give singular covariances: regularise then, as pytorch-fid
        # does.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all() or np.abs(covmean @ covmean - s_a @ s_b).max() > 1e-3 * max(
                1.0, np.abs(s_a @ s_b).max()):
            eps = np.eye(len(s_a)) * 1e-6 * max(1.0, float(np.trace(s_a) + np.trace(s_b)) / len(s_a))
            covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))
    return max(d, 0.0)  # tiny negative values are round-off


# ---- classifier two-sample test -----------------------------------------------------------------------
def two_sample_test(x_a: np.ndarray, x_b: np.ndarray, fit: FitFn, *, seed: int = 0,
                    test_fraction: float = 0.5) -> dict[str, float]:
    """Train a fresh A-vs-B classifier on a balanced part, score held-out accuracy (Lopez-Paz & Oquab 2017).

    Both sets are cut to the same size first, so chance is exactly 0.5. `stderr` is the binomial
    standard error of the held-out accuracy at 0.5: accuracies within ~2 stderr of 0.5 mean "cannot tell".
    """
    rng = np.random.default_rng(seed)
    n = min(len(x_a), len(x_b))
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 1:
        raise ValueError(f"too few samples ({n} per set) for a two-sample test")
    ia, ib = rng.permutation(len(x_a))[:n], rng.permutation(len(x_b))[:n]
    a, b = np.asarray(x_a)[ia], np.asarray(x_b)[ib]
    x_train = np.concatenate([a[n_test:], b[n_test:]])
    y_train = np.concatenate([np.zeros(n - n_test, np.int64), np.ones(n - n_test, np.int64)])
    x_test = np.concatenate([a[:n_test], b[:n_test]])
    y_test = np.concatenate([np.zeros(n_test, np.int64), np.ones(n_test, np.int64)])
    predict = fit(x_train, y_train, seed)
    acc = float((np.asarray(predict(x_test)) == y_test).mean())
    return dict(accuracy=acc, n_train=int(len(y_train)), n_test=int(len(y_test)),
                stderr=float(np.sqrt(0.25 / len(y_test))))


def fit_logistic(x: np.ndarray, y: np.ndarray, seed: int = 0, steps: int = 300,
                 weight_decay: float = 1e-3) -> Callable[[np.ndarray], np.ndarray]:
    """A standardised multinomial logistic regression (L-BFGS): a cheap classifier on feature vectors."""
    g = torch.Generator().manual_seed(seed)
    x_t = torch.as_tensor(np.asarray(x, np.float32).reshape(len(x), -1))
    mean, std = x_t.mean(0), x_t.std(0).clamp_min(1e-6)
    y_t = torch.as_tensor(np.asarray(y, np.int64))
    num_classes = int(y_t.max()) + 1
    lin = torch.nn.Linear(x_t.shape[1], num_classes)
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    z = (x_t - mean) / std

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(z), y_t) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def predict(xq: np.ndarray) -> np.ndarray:
        zq = (torch.as_tensor(np.asarray(xq, np.float32).reshape(len(xq), -1)) - mean) / std
        with torch.no_grad():
            return lin(zq).argmax(1).numpy()

    return predict


# ---- VAE reconstruction ---------------------------------------------------------------------------------
@torch.no_grad()
def reconstruct(vae: Any, x_model: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encode (posterior mode, or nearest codes for a VQModel) and decode: (N, C, H, W) in model space,
    clamped."""
    from models.autoencoder import reconstruct as ae_reconstruct

    return ae_reconstruct(vae, x_model.float(), batch_size)


def reconstruction_metrics(
    x_model: torch.Tensor, rec_model: torch.Tensor, dyn_range_db: float
) -> dict[str, float]:
    """PSNR and SSIM per image (mean over images) with data range 2 in model space [-1, 1].

    The dB <-> model map is linear, so this PSNR equals the PSNR in dB with data range = dyn_range_db.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    x, r = x_model.float(), rec_model.float()
    psnr = peak_signal_noise_ratio(r, x, data_range=2.0, dim=(1, 2, 3), reduction="elementwise_mean")
    ssim = structural_similarity_index_measure(r, x, data_range=2.0)
    mae_db = float((r - x).abs().mean() * dyn_range_db / 2.0)
    return dict(psnr_db=float(psnr), ssim=float(ssim), mae_db=mae_db, n=int(len(x)))


# ---- kinematic (physics) consistency ---------------------------------------------------------------------
def relative_error(real: Sequence[float], generated: Sequence[float]) -> float:
    """|median(gen) - median(real)| / |median(real)| over the finite values; NaN when either set is empty."""
    r = np.asarray(real, np.float64)
    g = np.asarray(generated, np.float64)
    r, g = r[np.isfinite(r)], g[np.isfinite(g)]
    if len(r) == 0 or len(g) == 0:
        return float("nan")
    ref = np.median(r)
    return float(abs(np.median(g) - ref) / max(abs(ref), 1e-12))


def physics_consistency(real: dict[str, dict[str, list[float]]],
                        generated: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per user and quantity: real and generated medians and their relative error; plus mean and worst over
    users.

    `real[user][quantity]` is the list of per-spectrogram read-outs (e.g. torso speed) for that user. A user
    whose generated spectrograms give no valid read-out at all counts as a 100% error (it is a failure, not
    a missing value); users with no valid real read-out are left out.
    """
    per_user: dict[str, dict[str, dict[str, float]]] = {}
    quantities = sorted({q for d in real.values() for q in d})
    for user in sorted(real):
        per_user[user] = {}
        for q in quantities:
            r, g = real[user].get(q, []), generated.get(user, {}).get(q, [])
            err = relative_error(r, g)
            if not np.isfinite(err) and np.isfinite(_nanmedian(r)):
                err = 1.0
            per_user[user][q] = dict(
                real_median=_nanmedian(r), generated_median=_nanmedian(g), rel_error=err,
                generated_valid=float(np.isfinite(np.asarray(g, float)).mean()) if len(g) else 0.0,
            )

    def over_users(q: str, fn) -> float:
        v = [per_user[u][q]["rel_error"] for u in per_user if np.isfinite(per_user[u][q]["rel_error"])]
        return float(fn(v)) if v else float("nan")

    return dict(per_user=per_user, mean_rel_error={q: over_users(q, np.mean) for q in quantities},
                max_rel_error={q: over_users(q, np.max) for q in quantities})


def _nanmedian(v: Sequence[float]) -> float:
    a = np.asarray(v, np.float64)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if len(a) else float("nan")


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample std (ddof=1; 0 for a single value) of repeated measurements."""
    v = np.asarray(values, np.float64)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.0, n=int(len(v)))


# ---- kinematic read-outs ----------------------------------------------------------------------------------
def torso_line_hz(db: np.ndarray, doppler_hz: np.ndarray, exclude_hz: float | None = None,
                  band: float = 0.2) -> np.ndarray:
    """Per-frame Doppler of the strongest persistent line (the torso).

    The line's typical Doppler is the median over frames of each frame's strongest bin; each frame is then
    searched within +-band of it (so a leg that briefly out-shines the torso is not taken) and refined by
    parabolic interpolation of the dB peak. Bins with |f| < exclude_hz (default: one bin) are ignored
    (clutter).
    """
    db, f = descending(db, doppler_hz)
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
    db, f = descending(db, doppler_hz)
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
    return dict(torso_mps=torso, envelope_mps=env_peak,
                envelope_ratio=env_peak / torso if torso else float("nan"),
                step_s=step, cycle_s=2 * step)


def kinematic_readouts(x: np.ndarray, y: np.ndarray, users: list[str], meta: dict[str, Any]
                       ) -> dict[str, dict[str, list[float]]]:
    """Per user: torso speed (m/s), upper-envelope speed (m/s) and cadence (steps/min) of each (N, C, H, W) dB
    image, with the radar axes of the dataset's meta.json (the read-outs above). Raises KeyError without
    axes."""
    doppler, _ = axes_from_meta(meta, x.shape[-2:])
    wavelength = float(meta.get("wavelength_m") or SPEED_OF_LIGHT / float(meta["carrier_hz"]))
    spf = float(meta["seconds_per_frame"])
    out: dict[str, dict[str, list[float]]] = {u: {"torso_mps": [], "envelope_mps": [], "cadence_spm": []}
                                              for u in users}
    for img, c in zip(x, y, strict=True):
        k = kinematics(img[0], doppler, spf, wavelength)
        r = out[users[int(c)]]
        r["torso_mps"].append(k["torso_mps"])
        r["envelope_mps"].append(k["envelope_mps"])
        r["cadence_spm"].append(60.0 / k["step_s"] if k["step_s"] and math.isfinite(k["step_s"])
                                else math.nan)
    return out


def activity_kinematics(db: np.ndarray, doppler_hz: np.ndarray, seconds_per_frame: float, wavelength_m: float,
                        activity: str = "walk") -> dict[str, float]:
    """The read-outs that apply to `activity`: an event (training/data/activities.EVENTS) -> its peak torso
    speed along the line of sight and its duration (activity_metrics.event_kinematics); any other name, a
    gait -> torso speed, upper envelope and cadence (`kinematics`; a limp's cadence from its gait cycle, as
    its envelope repeats once per cycle, not per step)."""
    if activity in EVENTS:
        k = event_kinematics(db, doppler_hz, seconds_per_frame, wavelength_m)
        return dict(event_peak_mps=k["event_peak_mps"], event_duration_s=k["event_duration_s"])
    k = kinematics(db, doppler_hz, seconds_per_frame, wavelength_m)
    if activity == "limp":
        cycle = gait_cycle_s(upper_envelope_hz(db, doppler_hz), seconds_per_frame)
        cadence = 120.0 / cycle if math.isfinite(cycle) else math.nan
    else:
        cadence = 60.0 / k["step_s"] if k["step_s"] and math.isfinite(k["step_s"]) else math.nan
    return dict(torso_mps=k["torso_mps"], envelope_mps=k["envelope_mps"], cadence_spm=cadence)


def activity_readouts(x: np.ndarray, y: np.ndarray, users: list[str], meta: dict[str, Any],
                      activities: Sequence[str] | None = None
                      ) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Per activity, per user: the `activity_kinematics` read-outs of each (N, C, H, W) dB image whose
    activity is activities[i] (None: all walks), with the radar axes of the dataset's meta.json. Each
    activity's block is what physics_consistency compares: physics_consistency(real[a], generated[a])."""
    doppler, _ = axes_from_meta(meta, x.shape[-2:])
    wavelength = float(meta.get("wavelength_m") or SPEED_OF_LIGHT / float(meta["carrier_hz"]))
    spf = float(meta["seconds_per_frame"])
    acts = ["walk"] * len(x) if activities is None else [str(a) for a in activities]
    if len(acts) != len(x):
        raise ValueError(f"{len(acts)} activities for {len(x)} images")
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for img, c, act in zip(x, y, acts, strict=True):
        per_user = out.setdefault(act, {})
        for q, v in activity_kinematics(img[0], doppler, spf, wavelength, act).items():
            per_user.setdefault(users[int(c)], {}).setdefault(q, []).append(v)
    return out
