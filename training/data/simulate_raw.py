"""`dopplergen simulate --raw`: the simulated people as a radar records them, for `dopplergen import`.

- `fmcw-dat`: Ancortek/Glasgow `.dat` text (docs/import.md), 128 complex beat samples per sweep over 400 MHz,
  one sweep per pulse of the simulator's PRF: per sweep, sum over body segments of
  amp_k exp(j (2 pi f_beat,k t_fast + 4 pi R_k / lambda)), f_beat = 2 B R / (c T_sweep) (IF = TX x conj(RX)),
  plus a static wall behind the track and white noise at the recording's SNR per sample.
- `slow-time`: a complex `.npy` of the slow-time return exactly as `simulate` turns it into a spectrogram
  (body, clutter line, noise).

Same walkers and per-recording draws as `simulate` (users.recording_kwargs; ranges and amplitudes from
radar.walk_echoes). SRC/<user>/<nnnn>.dat|npy plus manifest.csv (path,user,group and the draws: speed_mps,
aspect_deg, ...) and simulate_raw.json (the radar settings). Import them with the command it prints.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset_folder import manifest_path
from models.raw import SPEED_OF_LIGHT, format_dat
from training.data.radar import default_prf, slow_time_return, walk_echoes
from training.data.users import MAX_SPEED_MPS, UserProfile, Variation, recording_kwargs
from training.progress import progress as progress_bar

KINDS = ("fmcw-dat", "slow-time")
SAMPLES_PER_SWEEP = 128  # the Glasgow set's Ancortek settings
BANDWIDTH_HZ = 400e6  # range resolution c / 2B = 0.375 m; 128 complex samples reach 24 m
WALL_BEHIND_M = 4.0  # the static clutter of a .dat: a wall this far behind the track centre
COLUMNS = ("speed_mps", "aspect_deg", "range_m", "snr_db", "clutter_db", "start_phase", "height_m", "cycle_s")


def fmcw_beat(ranges: np.ndarray, amps: np.ndarray, carrier_hz: float, sweep_s: float,
              n_fast: int = SAMPLES_PER_SWEEP, bandwidth_hz: float = BANDWIDTH_HZ) -> np.ndarray:
    """(n_fast, sweeps) complex64 beat samples of scatterers at `ranges` (K, sweeps), amplitudes `amps`."""
    t_fast = np.arange(n_fast) * (sweep_s / n_fast)
    k_beat = 2 * np.pi * 2 * bandwidth_hz / (SPEED_OF_LIGHT * sweep_s)  # rad/s of beat per metre
    k_phase = 4 * np.pi * carrier_hz / SPEED_OF_LIGHT
    out = np.empty((n_fast, ranges.shape[1]), np.complex64)
    for a in range(0, ranges.shape[1], 256):  # 256 sweeps at a time bounds the (K, 256, n_fast) temporary
        r, amp = ranges[:, a:a + 256, None], amps[:, a:a + 256, None]
        out[:, a:a + 256] = (amp * np.exp(1j * (k_beat * r * t_fast + k_phase * r))).sum(axis=0).T
    return out


def _per_pulse(grid: np.ndarray, decim: int, n: int) -> np.ndarray:
    """Values on the kinematic grid (K, G) linearly interpolated to every pulse (K, n)."""
    i = np.arange(n)
    lo, frac = i // decim, (i % decim) / decim
    return grid[:, lo] + frac * (grid[:, lo + 1] - grid[:, lo])


def record(profile: UserProfile, j: int, cfg, kind: str) -> tuple[bytes, dict[str, Any]]:
    """One recording of `profile` in the `kind` layout, and its draws (manifest columns)."""
    kw = recording_kwargs(profile, j, Variation(**cfg.variation))
    carrier = cfg.carrier_ghz * 1e9
    prf = default_prf(carrier, MAX_SPEED_MPS)  # the dataset's one PRF, as `simulate` uses
    n = int(round(cfg.duration_s * prf))
    ranges, amps, decim, timing = walk_echoes(prf, n, kw["height_m"], kw["speed_mps"], kw["gait"],
                                              kw["start_phase"], cfg.duration_s, kw["aspect_deg"],
                                              kw["range_m"])
    rng = np.random.default_rng(kw["seed"])
    extra = {k: kw[k] for k in COLUMNS if k in kw} | {"cycle_s": float(timing["cycle_s"])}
    if kind == "slow-time":
        x = slow_time_return(ranges, amps, SPEED_OF_LIGHT / carrier, decim, n)
        p_sig = float(np.mean(np.abs(x) ** 2))
        x = x + np.sqrt(p_sig * 10 ** (kw["clutter_db"] / 10)) * np.exp(2j * np.pi * rng.random())
        noise = rng.standard_normal((2, n))
        x = x + np.sqrt(p_sig * 10 ** (-kw["snr_db"] / 10) / 2) * (noise[0] + 1j * noise[1])
        buf = io.BytesIO()
        np.save(buf, x.astype(np.complex64))
        return buf.getvalue(), extra
    r, a = _per_pulse(ranges, decim, n), _per_pulse(amps, decim, n)
    x = fmcw_beat(r, a, carrier, 1.0 / prf)
    p_sig = float(np.mean(np.abs(x) ** 2))
    wall = np.full((1, n), kw["range_m"] + WALL_BEHIND_M)
    x += fmcw_beat(wall, np.full((1, n), np.sqrt(p_sig * 10 ** (kw["clutter_db"] / 10))), carrier, 1.0 / prf)
    noise = rng.standard_normal((2, *x.shape)).astype(np.float32)
    x += np.float32(np.sqrt(p_sig * 10 ** (-kw["snr_db"] / 10) / 2)) * (noise[0] + 1j * noise[1])
    return format_dat(x, carrier, 1.0 / prf, BANDWIDTH_HZ), extra


def write_raw(out: Path, cfg, profiles: list[UserProfile], kind: str,
              progress: bool = True) -> dict[str, Any]:
    """Write every recording of every profile; return the settings (also in out/simulate_raw.json)."""
    if kind not in KINDS:
        raise ValueError(f"--raw must be one of {', '.join(KINDS)}")
    carrier = cfg.carrier_ghz * 1e9
    prf = default_prf(carrier, MAX_SPEED_MPS)
    suffix = ".dat" if kind == "fmcw-dat" else ".npy"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = progress_bar(total=len(profiles) * cfg.per_user, desc=f"simulate --raw {kind}", unit="rec",
                       disable=not progress)
    for p in profiles:
        (out / p.user_id).mkdir(exist_ok=True)
        for j in range(cfg.per_user):
            data, extra = record(p, j, cfg, kind)
            rel = f"{p.user_id}/{j:04d}{suffix}"
            (out / rel).write_bytes(data)
            rows.append({"path": rel, "user": p.user_id, "group": f"{p.user_id}_{j:04d}", **extra})
            bar.update(1)
    bar.close()
    with open(manifest_path(out), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    settings = {"kind": kind, "carrier_hz": carrier, "prf_hz": prf, "duration_s": cfg.duration_s,
                "samples_per_sweep": SAMPLES_PER_SWEEP if kind == "fmcw-dat" else None,
                "bandwidth_hz": BANDWIDTH_HZ if kind == "fmcw-dat" else None,
                "doppler_convention": "approaching = positive Doppler after import",
                "users": [p.user_id for p in profiles], "seed": cfg.seed, "variation": cfg.variation}
    (out / "simulate_raw.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return settings


def import_command(out: Path, settings: dict[str, Any], size: int) -> str:
    """The `dopplergen import` line for what write_raw wrote (slow-time .npy files carry no parameters)."""
    flags = "" if settings["kind"] == "fmcw-dat" else \
        f" --carrier-hz {settings['carrier_hz']:.10g} --prf-hz {settings['prf_hz']:.10g}"
    return f"dopplergen import {out} --out {out}-dataset --size {size}{flags}"


def estimated_mb(cfg, kind: str) -> float:
    """About how much disk write_raw will use (a .dat sample is ~20 bytes of text, a .npy one 8 bytes)."""
    per_sample = 20 * SAMPLES_PER_SWEEP if kind == "fmcw-dat" else 8
    prf = default_prf(cfg.carrier_ghz * 1e9, MAX_SPEED_MPS)
    return cfg.users * cfg.per_user * cfg.duration_s * prf * per_sample / 1e6
