"""Radar side of the micro-Doppler simulator: ellipsoid RCS (V.C. Chen), slow-time return, STFT,
`simulate_walk`.

Everything is vectorised over (segment, pulse); there is no Python loop per pulse or per segment.
Conventions (also in docs/simulator.md):
- the radar sits at `range_m` from the track centre, `aspect_deg` off the walking direction;
- positive Doppler = approaching; spectrogram row 0 = the most positive Doppler (descending axis,
  so an image shows approaching motion at the top); `Spectrogram.doppler_hz` gives the axis exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft

from training.data.activities import EVENTS, check_activity, event_points
from training.data.walker import SEGMENT_NAMES, SEGMENTS, TORSO_WIDTH, Gait, body_points

SPEED_OF_LIGHT = 299_792_458.0
DEFAULT_CARRIER_HZ = 24e9
DEFAULT_DURATION_S = 3.0  # about 2.5-3.5 gait cycles: enough to see (and measure) the periodicity
DEFAULT_SNR_DB = 20.0  # body power / noise power per pulse; the STFT adds ~20-30 dB of coherent gain
DEFAULT_CLUTTER_DB = -10.0  # static clutter (a DC line) power relative to the body's return
DEFAULT_DYN_RANGE_DB = 60.0  # dB below peak kept in the image; quieter bins are clipped
DEFAULT_RANGE_M = 12.0  # radar to track centre; far enough that the line-of-sight barely turns
DEFAULT_VELOCITY_SPAN_MPS = (-2.0, 8.0)  # Doppler band of a resized image: clutter at 0, feet reach ~4-5 v
NYQUIST_SPEED_MPS = 10.0  # default PRF covers +-this radial speed (>= 5x torso for walks up to 2 m/s)
WINDOW_S = 0.08  # STFT Hann window at 24 GHz (x sqrt(24 GHz / carrier) below 24 GHz, max 0.2 s): short
# enough to resolve each foot flash, long enough that 5.8 GHz (UoG uses ~0.2 s) still separates torso and legs
HOP_S = 0.01  # native STFT hop
RADAR_HEIGHT_M = 1.0
KINEMATICS_HZ = 500.0  # body poses are computed at >= this rate, then ranges interpolated to the PRF


# -------------------------------------------------------------------------------------------- radar
@dataclass
class Spectrogram:
    """A micro-Doppler spectrogram in dB relative to its peak (<= 0), shape (doppler_bins, time_frames)."""

    db: np.ndarray  # float32 (D, T); row 0 = most positive Doppler
    doppler_hz: np.ndarray  # (D,) bin centres, descending
    time_s: np.ndarray  # (T,) frame centres
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def velocity_mps(self) -> np.ndarray:
        return self.doppler_hz * self.meta["wavelength_m"] / 2


def window_seconds(carrier_hz: float) -> float:
    """STFT window length: WINDOW_S at 24 GHz, longer at lower carriers (coarser Doppler per m/s)."""
    return float(np.clip(WINDOW_S * np.sqrt(24e9 / carrier_hz), WINDOW_S, 0.2))


def default_prf(carrier_hz: float, speed_mps: float = 0.0) -> float:
    """A PRF whose +-PRF/2 covers +-max(10 m/s, 6 x speed): the feet (~5x torso) never alias."""
    v_nyq = max(NYQUIST_SPEED_MPS, 6.0 * speed_mps)
    return float(np.ceil(2 * (2 * v_nyq * carrier_hz / SPEED_OF_LIGHT) / 10.0) * 10.0)


def ellipsoid_rcs(a: np.ndarray, b: np.ndarray, c: np.ndarray, u_a: np.ndarray, u_b: np.ndarray,
                  u_c: np.ndarray) -> np.ndarray:
    """Ellipsoid RCS pi a^2 b^2 c^2 / (a^2 u_a^2 + b^2 u_b^2 + c^2 u_c^2)^2, with u_* the line-of-sight
    direction cosines on the semi-axes (u_a = sin th cos ph, u_b = sin th sin ph, u_c = cos th)."""
    return np.pi * (a * b * c) ** 2 / (a ** 2 * u_a ** 2 + b ** 2 * u_b ** 2 + c ** 2 * u_c ** 2) ** 2


def segment_echoes(a: np.ndarray, b: np.ndarray, radii: np.ndarray, widths: np.ndarray, rcs_scale: np.ndarray,
                   radar: np.ndarray, range_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment range R_k and amplitude sqrt(RCS_k) (R0/R_k)^2, each (K, T), from endpoints (K, T, 3).

    The semi-axis c runs along the segment; b (= widths x a) is its horizontal width across the walk.
    """
    centre = 0.5 * (a + b)
    axis = b - a
    los = radar - centre
    half_len = 0.5 * np.sqrt(np.einsum("ktd,ktd->kt", axis, axis))
    rng = np.sqrt(np.einsum("ktd,ktd->kt", los, los))
    u_c = np.einsum("ktd,ktd->kt", axis, los) / (2 * half_len * rng)
    # Width direction: world y made orthogonal to the segment axis (only matters where widths != 1).
    e_c = axis / (2 * half_len[..., None])
    e_b = np.array([0.0, 1.0, 0.0]) - e_c[..., 1:2] * e_c
    e_b /= np.maximum(np.linalg.norm(e_b, axis=-1, keepdims=True), 1e-9)
    u_b = np.einsum("ktd,ktd->kt", e_b, los) / rng
    u_a2 = np.clip(1.0 - u_b ** 2 - u_c ** 2, 0.0, 1.0)
    r = radii[:, None]
    rcs = ellipsoid_rcs(r, r * widths[:, None], half_len, np.sqrt(u_a2), u_b, u_c) * rcs_scale[:, None]
    return rng, np.sqrt(rcs) * (range_ref / rng) ** 2


def slow_time_return(rng: np.ndarray, amp: np.ndarray, wavelength: float, decim: int,
                     n_pulses: int) -> np.ndarray:
    """sum_k amp_k exp(-j 4 pi R_k / lambda) at every pulse, from R and amp on a grid `decim` pulses apart.

    Between grid points R is linear, so the phasor is z_i w_i^m with w_i = exp(-j dphi_i / decim): one
    complex exponential per grid point and a cumulative product, instead of one per pulse (body motion is
    far slower than the PRF; the interpolation's phase error is < 0.1 rad even at 77 GHz).
    """
    k4 = 4 * np.pi / wavelength
    phi = np.mod(rng * k4, 2 * np.pi)  # (K, G)
    dphi = np.diff(rng, axis=1) * k4  # exact increments, no wrapping issue
    z = np.exp(-1j * phi[:, :-1]).astype(np.complex64)  # (K, G-1)
    steps = np.empty(z.shape + (decim,), np.complex64)  # (K, G-1, decim)
    steps[..., 0] = z
    if decim > 1:
        steps[..., 1:] = np.exp(-1j * dphi / decim).astype(np.complex64)[..., None]
        steps = np.cumprod(steps, axis=-1)
    frac = np.arange(decim, dtype=np.float32) / decim
    amp = amp.astype(np.float32)
    a = amp[:, :-1, None] + frac * (amp[:, 1:, None] - amp[:, :-1, None])
    return (a * steps).sum(axis=0).reshape(-1)[:n_pulses]


def walk_echoes(prf: float, n_pulses: int, height_m: float, speed_mps: float, gait: Gait, start_phase: float,
                duration_s: float, aspect_deg: float, range_m: float, activity: str = "walk",
                onset_s: float = 0.0, tempo: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray, int, dict[str, float]]:
    """Per-segment range and amplitude (K, G) on the kinematic grid (every `decim` pulses, covering the last
    pulse), `decim`, and the gait or event timing: the body a radar at `range_m`, `aspect_deg` sees doing
    `activity` (a gait at `speed_mps` with `gait`'s variant, or an event from `onset_s`, `tempo` x its
    duration)."""
    decim = max(1, int(prf // KINEMATICS_HZ))
    t = np.arange(-(-n_pulses // decim) + 1) * (decim / prf)  # kinematic grid; covers the last pulse
    if check_activity(activity) in EVENTS:
        a, b, timing = event_points(t, height_m, gait, activity, onset_s, tempo)
    else:
        a, b, timing = body_points(t, height_m, speed_mps, gait, start_phase, duration_s)
    th = np.deg2rad(aspect_deg)
    radar = np.array([range_m * np.cos(th), range_m * np.sin(th), RADAR_HEIGHT_M])
    radii = np.array([r for _, r, _ in SEGMENTS]) * height_m * gait.girth
    scale = np.asarray(gait.rcs_scale, dtype=float)[[g for _, _, g in SEGMENTS]]
    widths = np.where(np.array(SEGMENT_NAMES) == "torso", TORSO_WIDTH, 1.0)
    rng, amp = segment_echoes(a, b, radii, widths, scale, radar, range_m)
    if activity in EVENTS:  # what the radar can see of the torso's peak speed: along the line of sight
        torso = rng[SEGMENT_NAMES.index("torso")]
        timing["torso_peak_radial_mps"] = float(np.abs(np.gradient(torso, t)).max())
    return rng, amp, decim, timing


def stft_power(x: np.ndarray, window: int, hop: int, nfft: int) -> np.ndarray:
    """|STFT|^2 with a Hann window, fftshifted and flipped: (nfft, frames), row 0 = most positive Doppler."""
    frames = np.lib.stride_tricks.sliding_window_view(x, window)[::hop]  # (F, W)
    spec = scipy.fft.fft(frames * np.hanning(window).astype(np.float32), n=nfft, axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    return np.fft.fftshift(power, axes=1)[:, ::-1].T


def _area_resample(x: np.ndarray, first_centre: float, step: float, dst_edges: np.ndarray,
                   axis: int) -> np.ndarray:
    """Average uniformly spaced bins (centres first_centre + i step; step may be negative) over each
    destination interval [dst_edges[j], dst_edges[j+1]], by differencing a cumulative sum along `axis`.

    BLAS-free on purpose: a threaded matmul here ran ~4x slower on a busy 2-core machine.
    """
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    cum = np.concatenate([np.zeros((1,) + x.shape[1:], x.dtype), np.cumsum(x, axis=0)])  # (n+1, ...)
    u = np.clip((dst_edges - (first_centre - step / 2)) / step, 0.0, n)  # edges in source-bin units
    i = np.minimum(u.astype(np.int64), n - 1)
    frac = (u - i)[:, None] if x.ndim > 1 else u - i
    c_at = cum[i] + frac * x[i]  # cumulative sum at each (fractional) edge
    width = np.maximum(np.abs(np.diff(u)), 1e-12)
    out = np.abs(np.diff(c_at, axis=0)) / (width[:, None] if x.ndim > 1 else width)
    return np.moveaxis(out, 0, axis)


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    d, t = (size, size) if isinstance(size, (int, np.integer)) else size
    if d < 8 or t < 8:
        raise ValueError(f"size must be at least 8x8, got {size!r}")
    return int(d), int(t)


def simulate_walk(height_m: float = 1.65, speed_mps: float = 1.4, carrier_hz: float = DEFAULT_CARRIER_HZ,
                  prf_hz: float | None = None, duration_s: float = DEFAULT_DURATION_S,
                  aspect_deg: float = 0.0, snr_db: float | None = DEFAULT_SNR_DB, seed: int = 0,
                  size: int | tuple[int, int] | None = None,
                  *, gait: Gait | None = None, range_m: float = DEFAULT_RANGE_M, start_phase: float = 0.0,
                  clutter_db: float | None = DEFAULT_CLUTTER_DB, dyn_range_db: float = DEFAULT_DYN_RANGE_DB,
                  velocity_span_mps: tuple[float, float] = DEFAULT_VELOCITY_SPAN_MPS, activity: str = "walk",
                  onset_s: float = 0.0, tempo: float = 1.0) -> Spectrogram:
    """Simulate one walk (Boulic-Thalmann kinematics, V.C. Chen's ellipsoid radar model) as a dB spectrogram.

    `size=None` returns the native STFT grid (full +-PRF/2 band); an int or (doppler, time) crops the
    Doppler axis to `velocity_span_mps` and averages power onto that grid. `snr_db=None` / `clutter_db=None`
    turn noise / clutter off. `seed` drives the noise and clutter phase only. `activity` (training/data/
    activities.py) picks a gait (`gait` is then that gait's variant) or an event starting at `onset_s`, whose
    keyframed duration is scaled by `tempo`; an event ignores `speed_mps` and `start_phase`.
    """
    gait = gait or Gait()
    if not 0 < height_m < 3 or speed_mps <= 0 or duration_s <= 0 or range_m <= 0:
        raise ValueError("height_m, speed_mps, duration_s and range_m must be positive (height below 3 m)")
    wavelength = SPEED_OF_LIGHT / carrier_hz
    prf = float(prf_hz) if prf_hz else default_prf(carrier_hz, speed_mps)
    out_size = _as_size(size)
    window = int(round(window_seconds(carrier_hz) * prf))
    hop_s, nfft = HOP_S, int(2 ** np.ceil(np.log2(window)))
    if out_size is None:
        nfft *= 2  # native grid: 2x zero padding
    else:
        # Only as fine a grid as the output needs: >= 2 native frames and >= 2 bins per output pixel.
        hop_s = min(HOP_S * 2.5, duration_s / (2 * out_size[1]))
        out_df = (velocity_span_mps[1] - velocity_span_mps[0]) * 2 / wavelength / out_size[0]
        nfft *= 1 if prf / nfft <= out_df / 2 else 2
    hop = max(1, int(round(hop_s * prf)))
    n_pulses = int(round(duration_s * prf))
    if n_pulses < window + hop:
        raise ValueError(f"duration_s={duration_s} is too short for the {window / prf:.3f} s STFT window")
    rng = np.random.default_rng(seed)

    # Kinematics -> slow-time return.
    ranges, amps, decim, timing = walk_echoes(prf, n_pulses, height_m, speed_mps, gait, start_phase,
                                              duration_s, aspect_deg, range_m, activity, onset_s, tempo)
    event = activity in EVENTS
    x = slow_time_return(ranges, amps, wavelength, decim, n_pulses)
    p_sig = float(np.mean(np.abs(x) ** 2))
    if clutter_db is not None:
        x = x + np.sqrt(p_sig * 10 ** (clutter_db / 10)) * np.exp(2j * np.pi * rng.random())
    if snr_db is not None:
        noise = rng.standard_normal((2, n_pulses))
        x = x + (np.sqrt(p_sig * 10 ** (-snr_db / 10) / 2) * (noise[0] + 1j * noise[1])).astype(np.complex64)

    # STFT -> power; axes of the native grid.
    power = stft_power(x, window, hop, nfft)
    df = prf / nfft
    doppler = (np.arange(nfft) - nfft // 2)[::-1] * df
    times = (np.arange(power.shape[1]) * hop + window / 2) / prf
    dt = hop / prf
    if out_size is not None:
        v_lo, v_hi = velocity_span_mps
        f_edges = np.linspace(v_hi, v_lo, out_size[0] + 1) * 2 / wavelength
        t_edges = np.linspace(times[0] - dt / 2, times[-1] + dt / 2, out_size[1] + 1)
        power = _area_resample(power, doppler[0], -df, f_edges, axis=0)
        power = _area_resample(power, times[0], dt, t_edges, axis=1)
        doppler, times = 0.5 * (f_edges[:-1] + f_edges[1:]), 0.5 * (t_edges[:-1] + t_edges[1:])
        df, dt = abs(f_edges[1] - f_edges[0]), t_edges[1] - t_edges[0]
    db = 10 * np.log10(np.maximum(power, 1e-30) / power.max())
    db = np.clip(db, -dyn_range_db, 0.0).astype(np.float32)

    meta = dict(
        carrier_hz=float(carrier_hz), wavelength_m=wavelength, prf_hz=prf, window="hann",
        window_length=window,
        hop=hop, nfft=nfft, doppler_hz_per_bin=float(df), seconds_per_frame=float(dt),
        doppler_axis="descending (row 0 = most positive Doppler = approaching)",
        dyn_range_db=float(dyn_range_db),
        velocity_span_mps=list(velocity_span_mps) if out_size else [float(doppler[-1] * wavelength / 2),
                                                                     float(doppler[0] * wavelength / 2)],
        height_m=float(height_m), speed_mps=float(speed_mps), aspect_deg=float(aspect_deg),
        range_m=float(range_m),
        duration_s=float(duration_s), snr_db=snr_db, clutter_db=clutter_db, start_phase=float(start_phase),
        seed=int(seed), torso_doppler_hz=float(2 * speed_mps * np.cos(np.deg2rad(aspect_deg)) / wavelength),
        gait=gait.to_dict(), **{k: float(v) for k, v in timing.items()}, activity=activity,
    )
    if event:  # no walking speed or gait cycle: NaN, which a manifest writes as an empty cell
        meta.update(speed_mps=float("nan"), torso_doppler_hz=float("nan"), cycle_s=float("nan"))
    return Spectrogram(db=db, doppler_hz=doppler.astype(np.float64),
                       time_s=times.astype(np.float64), meta=meta)
