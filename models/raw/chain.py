"""The field's processing chain, raw samples -> dB spectrograms (the University of Glasgow set's own MATLAB
chain, in scipy): range FFT along fast time, MTI high-pass along slow time, the range bins that hold the
person summed, STFT, the Doppler rows within +-max speed, dB relative to the peak, clipped, resized.

Doppler sign (docs/import.md): the spectrogram's row 0 is the most positive Doppler = approaching, as in the
simulator. Slow-time and range-time arrays are taken as sum amp exp(-j 4 pi R / lambda), where an approaching
target has a positive frequency. For FMCW fast-time samples the chain keeps the half of the range FFT that
holds the energy: at positive beat frequencies (IF = TX x conj(RX)) the phase is +4 pi R / lambda, so the
Doppler axis is negated; at negative ones it is not. `flip_doppler` negates it again for other radars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal
from PIL import Image

from models.raw.files import read_raw
from models.raw.params import SPEED_OF_LIGHT, ChainConfig, RadarParams, RawRecording, parse_range_bins
from models.safe_files import DatasetError

GLASGOW_MTI = 0.0075  # the set's Butterworth cut-off, as a fraction of the slow-time Nyquist frequency
DOPPLER_AXIS = "descending (row 0 = most positive Doppler = approaching)"


def mti(x: np.ndarray, prf_hz: float, cutoff_hz: float | None, name: str) -> tuple[np.ndarray, float]:
    """Clutter removal: a 4th-order Butterworth high-pass along slow time (the last axis), zero-phase."""
    cutoff = GLASGOW_MTI * prf_hz / 2 if cutoff_hz is None else float(cutoff_hz)
    if cutoff == 0:
        return x, 0.0
    if cutoff >= prf_hz / 2:
        raise DatasetError(f"{name}: --mti-cutoff-hz {cutoff:g} is not below the Nyquist frequency "
                           f"{prf_hz / 2:g} Hz of a {prf_hz:g} Hz PRF")
    sos = scipy.signal.butter(4, cutoff, btype="highpass", fs=prf_hz, output="sos")
    try:
        return scipy.signal.sosfiltfilt(sos, x, axis=-1), cutoff
    except ValueError as e:  # shorter than the filter's padding
        raise DatasetError(f"{name}: too short for the MTI filter ({x.shape[-1]} sweeps: {e})") from None


def slow_time(rec: RawRecording, params: RadarParams,
              chain: ChainConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """The person's slow-time signal (clutter removed) and what the chain chose on the way."""
    info: dict[str, Any] = {"layout": rec.layout}
    sign = 1
    x = rec.samples
    if rec.layout == "fast-time":  # range FFT per sweep; the half of the spectrum holding the echoes
        spec = scipy.fft.fft(x, axis=0)
        n = x.shape[0] // 2
        halves = {"positive": spec[:n], "negative": np.roll(spec[::-1], 1, axis=0)[:n]}
        filtered = {k: mti(v, params.prf_hz, chain.mti_cutoff_hz, rec.name) for k, v in halves.items()}
        energy = {k: float(np.mean(np.abs(v[0][1:]) ** 2)) for k, v in filtered.items()}
        half = max(energy, key=energy.get)
        (x, cutoff), sign = filtered[half], (-1 if half == "positive" else 1)
        info["beat_half"] = half
    else:
        x, cutoff = mti(x, params.prf_hz, chain.mti_cutoff_hz, rec.name)
    info["mti_cutoff_hz"] = cutoff
    if x.ndim == 2:
        box = parse_range_bins(chain.range_bins)
        if box is not None:
            a, b = box
            if b > x.shape[0]:
                raise DatasetError(f"{rec.name}: --range-bins {a}:{b} goes past its {x.shape[0]} range bins")
        else:
            energy = np.mean(np.abs(x) ** 2, axis=1)
            keep = np.flatnonzero(energy >= energy.max() * 10 ** (-chain.range_db / 10))
            a, b = int(keep[0]), int(keep[-1]) + 1
        info["range_bins"] = [a, b]
        if params.bandwidth_hz:
            info["range_m_per_bin"] = SPEED_OF_LIGHT / (2 * params.bandwidth_hz)
        x = x[a:b].sum(axis=0)
    info["doppler_sign"] = -sign if chain.flip_doppler else sign
    return x, info


def spectrogram(s: np.ndarray, params: RadarParams, chain: ChainConfig, sign: int,
                name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """STFT of one slow-time signal -> (size, size) float32 dB <= 0, row 0 = most positive Doppler; and its
    axes."""
    prf, carrier = float(params.prf_hz), float(params.carrier_hz)
    nw = int(round(chain.stft_window_s * prf))
    if nw < 8:
        raise DatasetError(f"{name}: --stft-window-s {chain.stft_window_s:g} is {nw} sweeps at {prf:g} Hz; "
                           "make it at least 8")
    if s.size < nw:
        raise DatasetError(f"{name}: {s.size / prf:.3g} s long, shorter than the {chain.stft_window_s:g} s "
                           "STFT window (--stft-window-s)")
    hop = max(1, int(round(nw * (1 - chain.stft_overlap))))
    mfft = chain.zero_pad * nw
    sft = scipy.signal.ShortTimeFFT(scipy.signal.windows.hann(nw, sym=False), hop=hop, fs=prf, mfft=mfft,
                                    fft_mode="centered")
    frames = (s.size - nw) // hop + 1
    spec = sft.stft(s, p0=0, p1=frames, k_offset=nw // 2)  # (mfft, frames), frequencies ascending
    df = prf / mfft
    wavelength = SPEED_OF_LIGHT / carrier
    f_max = min(2 * chain.max_speed_mps / wavelength, prf / 2 - df)
    k = int(np.floor(f_max / df + 1e-9))
    zero = int(np.argmin(np.abs(sft.f)))
    power = (spec.real ** 2 + spec.imag ** 2)[zero - k: zero + k + 1]  # ascending frequency
    if sign > 0:
        power = power[::-1]  # row 0 = most positive frequency
    power = (power / max(float(power.max()), 1e-300)).astype(np.float32)
    img = Image.fromarray(np.ascontiguousarray(power), mode="F").resize((chain.size, chain.size), Image.BOX)
    small = np.asarray(img, dtype=np.float64)
    db = 10 * np.log10(np.maximum(small, 1e-30) / max(float(small.max()), 1e-30))
    per_bin = (2 * k + 1) * df / chain.size
    axes = {"carrier_hz": carrier, "prf_hz": prf, "doppler_hz_row0": (k + 0.5) * df - per_bin / 2,
            "doppler_hz_per_bin": per_bin, "seconds_per_frame": frames * hop / prf / chain.size,
            "doppler_axis": DOPPLER_AXIS, "stft_window_samples": nw, "stft_hop_samples": hop, "nfft": mfft,
            "max_speed_mps": k * df * wavelength / 2}
    return np.clip(db, -chain.dyn_range_db, 0.0).astype(np.float32), axes


def raw_windows(rec: RawRecording, chain: ChainConfig,
                params: RadarParams | None = None) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Every window of a recording (chain.clip_seconds / clip_hop_seconds; one for the whole recording
    without them) as (dB (size, size), axes); `params` over the recording's own."""
    chain.validate()
    p = (params or RadarParams()).over(rec.params).complete(rec.name)
    s, info = slow_time(rec, p, chain)
    prf = float(p.prf_hz)
    if chain.clip_seconds is None:
        length, starts = s.size, [0]
    else:
        length = int(round(chain.clip_seconds * prf))
        step = max(1, int(round((chain.clip_hop_seconds or chain.clip_seconds) * prf)))
        if s.size < length:
            raise DatasetError(f"{rec.name}: {s.size / prf:.3g} s long, shorter than --clip-seconds "
                               f"{chain.clip_seconds:g}")
        starts = list(range(0, s.size - length + 1, step))
    out = []
    for a in starts:
        db, axes = spectrogram(s[a:a + length], p, chain, info["doppler_sign"], rec.name)
        out.append((db, {**axes, **info, "window_start_s": a / prf, "window_s": length / prf}))
    return out


def raw_to_db(rec: RawRecording, chain: ChainConfig | None = None,
              params: RadarParams | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The whole recording as one (size, size) float32 dB spectrogram (<= 0) and its axes (clip settings
    ignored)."""
    chain = chain or ChainConfig()
    whole = ChainConfig(**{**chain.to_dict(), "clip_seconds": None, "clip_hop_seconds": None})
    return raw_windows(rec, whole, params)[0]


def raw_spectrograms(src: Path | bytes, name: str, chain: ChainConfig | None = None,
                     params: RadarParams | None = None,
                     layout: str | None = None) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """A raw file (path or uploaded bytes, its type from `name`'s suffix) -> every window's (dB, axes).
    What enrolment calls for a raw upload; DatasetError naming `name` for anything unusable."""
    return raw_windows(read_raw(src, name, params, layout), chain or ChainConfig())
