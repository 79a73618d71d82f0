"""Physics read-outs of the activities beyond a steady walk (training/data/activities.py), from one (doppler,
time) dB image and its axes, as in training/eval/metrics.py (which re-exports them and dispatches per
activity in `activity_readouts`):

- an event (sit, stand, fall, pickup): its peak torso speed along the line of sight and its duration. The
  torso is the strongest line off the zero-Doppler clutter line, of either sign (sitting down moves away);
  the event is the longest stretch of frames where some body part is seen moving (a bin off the clutter line
  within `threshold_db` of the image peak, two frames running), pauses bridged (the torso line crosses zero
  between the forward and backward phases of a sit-to-stand, a pickup holds its lowest pose);
- a gait's cycle and step asymmetry from the upper envelope's autocorrelation (step and stride regularity,
  Moe-Nilssen & Helbostad, J Biomech 2004): a limp's two steps differ so much that its envelope repeats
  once per cycle, not once per step;
- the arms' swing: power just above the torso line, relative to it (a carried load does not swing).

The events' kinematic references are the simulator's meta `torso_peak_radial_mps` (peak |d range / dt| of the
torso's centre) and `event_duration_s`; tests/training/data/test_activities.py checks them.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter

CLUTTER_BINS = 1.5  # |f| below this many Doppler bins is the clutter line (and the still body)
EVENT_THRESHOLD_DB = -30.0  # moving parts: within this of the image peak (the still body + clutter)
MAX_GAP_S = 1.5  # pauses of an event up to this long are bridged (a slow pickup holds its lowest pose)


def descending(db: np.ndarray, doppler_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the image with row 0 = most positive Doppler, whatever its orientation."""
    db = np.asarray(db, dtype=np.float64)
    if db.ndim != 2 or db.shape[0] != len(doppler_hz):
        raise ValueError(f"expected a (doppler, time) image with {len(doppler_hz)} rows, got {db.shape}")
    if doppler_hz[0] < doppler_hz[-1]:
        return db[::-1], np.asarray(doppler_hz, dtype=np.float64)[::-1]
    return db, np.asarray(doppler_hz, dtype=np.float64)


def _clutter(f: np.ndarray, exclude_hz: float | None) -> np.ndarray:
    """(D,) True on the rows of the zero-Doppler clutter line."""
    return np.abs(f) < (CLUTTER_BINS * abs(f[1] - f[0]) if exclude_hz is None else exclude_hz)


# ---- events ------------------------------------------------------------------------------------------------
def event_line_hz(db: np.ndarray, doppler_hz: np.ndarray, exclude_hz: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the Doppler of the strongest bin off the clutter line (either sign; |f| < exclude_hz,
    default CLUTTER_BINS bins, is clutter), refined by parabolic interpolation of the dB peak, and its level
    in dB. In a still frame it is a sidelobe of the clutter line, which `moving_frames` tells apart."""
    db, f = descending(db, doppler_hz)
    d = np.where(_clutter(f, exclude_hz)[:, None], -np.inf, db)
    k = np.clip(d.argmax(axis=0), 1, len(f) - 2)
    cols = np.arange(db.shape[1])
    y0, y1, y2 = d[k - 1, cols], d[k, cols], d[k + 1, cols]
    y0, y2 = np.where(np.isfinite(y0), y0, y1), np.where(np.isfinite(y2), y2, y1)  # next to the clutter
    curv = y0 - 2 * y1 + y2
    shift = np.where(curv < 0, 0.5 * (y0 - y2) / np.where(curv < 0, curv, -1.0), 0.0)
    return f[k] + np.clip(shift, -0.5, 0.5) * (f[1] - f[0]), y1


def moving_frames(db: np.ndarray, doppler_hz: np.ndarray, threshold_db: float = EVENT_THRESHOLD_DB,
                  exclude_hz: float | None = None) -> np.ndarray:
    """(T,) True where some bin off the clutter line is >= the image peak + threshold_db in this frame and
    in a neighbouring one: some body part moves (a still body returns on the clutter line only; a lone noise
    pixel does not last two frames)."""
    db, f = descending(db, doppler_hz)
    above = ((db >= db.max() + threshold_db) & ~_clutter(f, exclude_hz)[:, None]).any(axis=0)
    before, after = np.r_[False, above[:-1]], np.r_[above[1:], False]
    return above & (before | after)


def longest_run(mask: np.ndarray, max_gap: int = 0) -> tuple[int, int] | None:
    """(first, last) index of the longest run of True, gaps of up to `max_gap` False bridged; None if none."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts, ends = np.r_[idx[0], idx[breaks + 1]], np.r_[idx[breaks], idx[-1]]
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i])


def event_kinematics(db: np.ndarray, doppler_hz: np.ndarray, seconds_per_frame: float, wavelength_m: float,
                     threshold_db: float = EVENT_THRESHOLD_DB, max_gap_s: float = MAX_GAP_S
                     ) -> dict[str, float]:
    """An event's read-outs: the peak |radial speed| of the torso line over the event's moving frames (m/s;
    the line median-filtered over 3 frames, so one frame where another part out-shines the torso does not
    set it), the event's onset and duration (s: first to last moving frame, plus one frame). NaN without
    motion."""
    moving = moving_frames(db, doppler_hz, threshold_db)
    span = longest_run(moving, int(round(max_gap_s / seconds_per_frame)))
    if span is None:
        return dict(event_peak_mps=float("nan"), event_onset_s=float("nan"), event_duration_s=float("nan"))
    first, last = span
    speed = np.abs(median_filter(event_line_hz(db, doppler_hz)[0], 3, mode="nearest")) * wavelength_m / 2
    return dict(event_peak_mps=float(speed[first:last + 1][moving[first:last + 1]].max()),
                event_onset_s=float(first * seconds_per_frame),
                event_duration_s=float((last - first + 1) * seconds_per_frame))


# ---- gaits -------------------------------------------------------------------------------------------------
def _autocorrelation(x: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation of x minus its mean, 1 at lag 0."""
    e = np.asarray(x, dtype=np.float64)
    e = e - e.mean()
    n = e.size
    ac = np.correlate(e, e, mode="full")[n - 1:] / (n - np.arange(n))
    return ac / max(ac[0], 1e-30)


def _peak_lag(ac: np.ndarray, lo: int, hi: int) -> float:
    """Sub-frame lag of the first local maximum of ac within [lo, hi] frames that is >= 0.8 x the highest
    there (a multiple of the period is about as high), parabolic refinement; NaN if none."""
    peaks = [i for i in range(max(lo, 1), min(hi, ac.size - 2) + 1)
             if ac[i] >= ac[i - 1] and ac[i] >= ac[i + 1]]
    if not peaks or max(ac[peaks]) <= 0:
        return float("nan")
    i = next(j for j in peaks if ac[j] >= 0.8 * max(ac[peaks]))
    y0, y1, y2 = ac[i - 1], ac[i], ac[i + 1]
    denom = y0 - 2 * y1 + y2
    return float(i + (np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5) if denom < 0 else 0.0))


def gait_cycle_s(envelope: np.ndarray, seconds_per_frame: float, min_s: float = 0.6,
                 max_s: float = 2.2) -> float:
    """The gait cycle from the upper envelope: the lag of its autocorrelation's highest peak within
    [min_s, max_s] (up to 3/4 of the recording; the first peak nearly as high, not a multiple of it). For a
    gait whose two steps differ (a limp) the envelope repeats once per cycle; for an even walk use
    2 x metrics.envelope_period_s (the step) instead."""
    ac = _autocorrelation(envelope)
    hi = min(int(np.ceil(max_s / seconds_per_frame)), int(ac.size * 0.75))
    return _peak_lag(ac, int(np.floor(min_s / seconds_per_frame)), hi) * seconds_per_frame


def step_asymmetry(envelope: np.ndarray, seconds_per_frame: float, cycle_s: float) -> float:
    """1 - step regularity / stride regularity (Moe-Nilssen & Helbostad 2004): the envelope's autocorrelation
    at one step (its highest within +-20 % of half the cycle) over that at one cycle. ~0 when the two steps
    look alike (a walk); near or above 1 when they differ (a limp, whose envelope anti-correlates at half a
    cycle). NaN when the cycle is unknown or the recording too short."""
    ac = _autocorrelation(envelope)
    if not np.isfinite(cycle_s) or cycle_s <= 0 or cycle_s / seconds_per_frame + 1 >= ac.size:
        return float("nan")
    lags = np.arange(ac.size) * seconds_per_frame
    step = ac[np.abs(lags - cycle_s / 2) <= 0.1 * cycle_s].max()
    stride = float(np.interp(cycle_s, lags, ac))
    return float(1.0 - step / stride) if stride > 0 else float("nan")


def arm_band_db(db: np.ndarray, doppler_hz: np.ndarray, torso_hz: np.ndarray, wavelength_m: float,
                band_mps: tuple[float, float] = (0.25, 0.6)) -> float:
    """Median over frames of the power `band_mps` above the torso line (`torso_hz`, per frame, e.g.
    metrics.torso_line_hz) relative to the power within 0.12 m/s of it, in dB: the swinging arms moving
    forward (and the thighs); a load carried in front with still arms lowers it."""
    db, f = descending(db, doppler_hz)
    p = 10 ** (db / 10)
    rel = (f[:, None] - np.asarray(torso_hz)[None, :]) * wavelength_m / 2  # (D, T) m/s above the torso
    torso = (p * (np.abs(rel) < 0.12)).sum(axis=0)
    arms = (p * ((rel > band_mps[0]) & (rel < band_mps[1]))).sum(axis=0)
    return float(10 * np.log10(np.median(arms / np.maximum(torso, 1e-30))))
