"""What a raw recording needs besides its samples: the radar's parameters, the layout of its array, and the
settings of the processing chain (docs/import.md, "Raw recordings").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from models.safe_files import DatasetError

SPEED_OF_LIGHT = 299_792_458.0
LAYOUTS = ("slow-time", "range-time", "fast-time")
# Scalar variables a .mat/.h5/.npz recording may carry, read as RadarParams fields of the same name.
PARAM_VARIABLES = ("carrier_hz", "prf_hz", "bandwidth_hz", "sweep_s")
FLAG = {"carrier_hz": "--carrier-hz", "prf_hz": "--prf-hz (or --sweep-s)", "bandwidth_hz": "--bandwidth-hz",
        "sweep_s": "--sweep-s"}


@dataclass(frozen=True)
class RadarParams:
    """The radar of one recording; None where neither the file nor the caller says."""

    carrier_hz: float | None = None  # centre frequency: turns Doppler (Hz) into speed (m/s)
    prf_hz: float | None = None  # sweeps (pulses) per second = the slow-time sample rate
    bandwidth_hz: float | None = None  # FMCW sweep bandwidth: range resolution c / 2B (recorded only)
    sweep_s: float | None = None  # FMCW sweep time; the PRF is 1 / sweep_s when prf_hz is not given

    def over(self, base: RadarParams) -> RadarParams:
        """These values where set, `base`'s elsewhere (flags over the file's own variables)."""
        return replace(base, **{f.name: getattr(self, f.name) for f in fields(self)
                                if getattr(self, f.name) is not None})

    def complete(self, name: str) -> RadarParams:
        """With the PRF worked out from the sweep time; DatasetError naming the file and the flag to pass."""
        p = self if self.prf_hz or not self.sweep_s else replace(self, prf_hz=1.0 / self.sweep_s)
        for key, what in (("carrier_hz", "carrier frequency"), ("prf_hz", "PRF (sweeps per second)")):
            v = getattr(p, key)
            if v is None:
                raise DatasetError(f"{name}: the {what} is not in the file; pass {FLAG[key]}")
            if not np.isfinite(v) or v <= 0:
                raise DatasetError(f"{name}: {key} = {v!r} must be a positive number ({FLAG[key]})")
        return p

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class RawRecording:
    """Complex samples as recorded: (N,) slow time, or (bins, sweeps): range bins, or FMCW fast-time
    samples."""

    samples: np.ndarray  # complex64
    layout: str  # one of LAYOUTS
    params: RadarParams
    name: str  # for messages


@dataclass(frozen=True)
class ChainConfig:
    """The processing chain (range FFT, MTI, range bins, STFT, Doppler span, dB, clip, resize); the defaults
    are the University of Glasgow set's own chain. Written into meta.json["raw_chain"]."""

    size: int = 64  # output spectrograms are size x size (doppler x time)
    stft_window_s: float = 0.2  # Hann window of the STFT, seconds
    stft_overlap: float = 0.95  # fraction of the window shared by neighbouring frames
    zero_pad: int = 4  # FFT length = zero_pad x window
    max_speed_mps: float = 6.0  # Doppler rows kept: +-2 v / lambda (capped at the PRF's Nyquist)
    dyn_range_db: float = 60.0  # dB below each spectrogram's peak kept; quieter bins are clipped
    mti_cutoff_hz: float | None = None  # 4th-order Butterworth high-pass; None: 0.0075 x Nyquist; 0: off
    range_bins: str | None = None  # "A:B": sum these range bins; None: the bins holding the person, by energy
    range_db: float = 15.0  # by energy: the span of bins within this many dB of the strongest bin
    flip_doppler: bool = False  # radars that mix the other way round: negate the Doppler axis
    clip_seconds: float | None = None  # cut recordings into windows this long (None: one per recording)
    clip_hop_seconds: float | None = None  # start-to-start distance of windows (None: clip_seconds)

    def validate(self) -> None:
        if not 8 <= self.size <= 1024:
            raise ValueError("--size must be within 8..1024")
        if not 0.001 <= self.stft_window_s <= 10:
            raise ValueError("--stft-window-s must be within 0.001..10 s")
        if not 0 <= self.stft_overlap < 1:
            raise ValueError("--stft-overlap must be within 0..1 (0.95 keeps 95% of each window)")
        if not 1 <= self.zero_pad <= 64:
            raise ValueError("zero_pad must be within 1..64")
        if not self.max_speed_mps > 0:
            raise ValueError("--max-speed-mps must be positive")
        if not 10.0 <= self.dyn_range_db <= 200.0:
            raise ValueError("--dyn-range-db must be within 10..200")
        if self.mti_cutoff_hz is not None and self.mti_cutoff_hz < 0:
            raise ValueError("--mti-cutoff-hz must be >= 0 (0 turns the MTI filter off)")
        parse_range_bins(self.range_bins)
        if self.clip_seconds is not None and self.clip_seconds <= 0:
            raise ValueError("--clip-seconds must be positive")
        if self.clip_hop_seconds is not None and (self.clip_seconds is None or self.clip_hop_seconds <= 0):
            raise ValueError("--clip-hop-seconds needs --clip-seconds and must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_range_bins(text: str | None) -> tuple[int, int] | None:
    """'A:B' -> (A, B), the range bins A..B-1; None -> None (choose by energy)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if m is None or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"--range-bins {text!r}: expected A:B with A < B (range bins A..B-1, from 0), "
                         "e.g. 10:40")
    return int(m.group(1)), int(m.group(2))
