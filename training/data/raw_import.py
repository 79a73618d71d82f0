"""Raw recordings in `dopplergen import`: their flags, people and activities from file names, each recording's
windows through the field's chain (models/raw) as dataset records, and the physical axes for meta.json.

A raw recording is one session: all its windows go to one split. Without --user-pattern the person is the
parent folder (the ImageFolder layout); with it, the pattern's first group searched in the path under SRC, so
SRC may be a flat folder of files such as the Glasgow set's `1P40A01R02.dat`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from models import sessions
from models.raw import ChainConfig, RadarParams, is_raw, raw_spectrograms
from training.data.dataset import DatasetError, Record

PARAM_KEYS = ("carrier_hz", "prf_hz", "bandwidth_hz", "sweep_s")
CHAIN_KEYS = ("stft_window_s", "stft_overlap", "max_speed_mps", "range_bins", "mti_cutoff_hz", "flip_doppler",
              "clip_seconds", "clip_hop_seconds")
META_AXES = ("carrier_hz", "prf_hz", "doppler_hz_row0", "doppler_hz_per_bin", "seconds_per_frame",
             "doppler_axis")
CHAIN_FACTS = ("stft_window_samples", "stft_hop_samples", "nfft", "mti_cutoff_hz", "max_speed_mps", "layout",
               "beat_half", "doppler_sign", "range_m_per_bin")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ChainConfig()
    g = p.add_argument_group("raw recordings (.dat, complex .npy, .npz, .mat, .h5): docs/import.md")
    g.add_argument("--user-pattern", default=None,
                   help="regex; its first group, searched in the path under SRC, names the person (default: "
                        "the parent folder), e.g. 'P(\\d+)' for 1P40A01R02.dat; SRC may be a flat folder")
    g.add_argument("--activity-pattern", default=None,
                   help="regex; its first group becomes the manifest column 'activity', e.g. '^(\\d+)P'")
    g.add_argument("--carrier-hz", type=float, default=None,
                   help="radar carrier frequency, Hz: for raw recordings over the file's own (a .dat header "
                        "has it); for images, recorded in meta.json and needed by --doppler-range in m/s")
    g.add_argument("--prf-hz", type=float, default=None, help="pulses (sweeps) per second")
    g.add_argument("--sweep-s", type=float, default=None, help="FMCW sweep time, s (PRF = 1 / sweep time)")
    g.add_argument("--bandwidth-hz", type=float, default=None, help="FMCW bandwidth, Hz (range axis only)")
    g.add_argument("--raw-layout", choices=("range-time", "fast-time"), default=None,
                   help="what 2-D arrays hold besides the sweeps: range bins (default) or FMCW fast-time "
                        "samples (then a range FFT is done first)")
    g.add_argument("--stft-window-s", type=float, default=d.stft_window_s,
                   help=f"STFT Hann window, seconds (default {d.stft_window_s:g})")
    g.add_argument("--stft-overlap", type=float, default=d.stft_overlap,
                   help=f"overlap of STFT windows, 0..1 (default {d.stft_overlap:g})")
    g.add_argument("--max-speed-mps", type=float, default=d.max_speed_mps,
                   help=f"Doppler rows kept: +-this radial speed (default {d.max_speed_mps:g} m/s)")
    g.add_argument("--range-bins", default=None,
                   help="A:B: sum range bins A..B-1 (default: the bins holding the person, by energy)")
    g.add_argument("--mti-cutoff-hz", type=float, default=None,
                   help="MTI (Butterworth high-pass) cut-off, Hz (default 0.0075 x PRF/2; 0: off)")
    g.add_argument("--flip-doppler", action="store_true",
                   help="negate the Doppler axis (a radar that mixes the other way round)")
    g.add_argument("--clip-seconds", type=float, default=None,
                   help="cut each recording into windows this long (default: one spectrogram per recording)")
    g.add_argument("--clip-hop-seconds", type=float, default=None,
                   help="start-to-start distance of windows (default: --clip-seconds)")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The raw flags as ImportConfig.raw (what meta.json["import"]["raw"] records)."""
    return {k: getattr(args, k) for k in (*PARAM_KEYS, "raw_layout", *CHAIN_KEYS)}


def chain_of(cfg) -> ChainConfig:
    return ChainConfig(size=cfg.size, dyn_range_db=cfg.dyn_range_db,
                       **{k: cfg.raw[k] for k in CHAIN_KEYS if cfg.raw.get(k) is not None})


def params_of(cfg) -> RadarParams:
    return RadarParams(**{k: cfg.raw.get(k) for k in PARAM_KEYS})


def compile_pattern(regex: str | None, flag: str) -> re.Pattern[str] | None:
    return sessions.compile_capturing(regex, flag, ", e.g. 'P(\\d+)'")


def validate(cfg) -> None:
    chain_of(cfg).validate()
    compile_pattern(cfg.user_pattern, "--user-pattern")
    compile_pattern(cfg.activity_pattern, "--activity-pattern")
    for k in PARAM_KEYS:
        if cfg.raw.get(k) is not None and not cfg.raw[k] > 0:
            raise ValueError(f"--{k.replace('_', '-')} must be positive")


def _match(pattern: re.Pattern[str], rel: str, flag: str) -> str:
    m = pattern.search(rel)
    if m is None or not m.group(1):
        raise DatasetError(f"{rel}: {flag} '{pattern.pattern}' does not match it (or its first group is "
                           "empty); it is searched in the path under SRC")
    return m.group(1)


def session_of(path: Path, inner: str, pattern: re.Pattern[str] | None) -> str:
    """A raw recording is its own session (its path without the suffix) unless --group says otherwise."""
    if pattern is None and is_raw(path):
        return str(PurePosixPath(inner).with_suffix(""))
    return sessions.session_of(inner, pattern)


def discover_by_pattern(src: Path, cfg, suffixes: tuple[str, ...],
                        group: re.Pattern[str] | None) -> list[tuple[str, str, str, dict[str, str]]]:
    """(user, rel, session, extra) of every file under SRC, the person from --user-pattern."""
    pattern = compile_pattern(cfg.user_pattern, "--user-pattern")
    files = sorted(f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in f.relative_to(src).parts))
    if not files:
        raise DatasetError(f"{src}: no {'/'.join(suffixes)} files")
    out = []
    for f in files:
        rel = f.relative_to(src).as_posix()
        out.append((_match(pattern, rel, "--user-pattern"), rel, session_of(f, rel, group), {}))
    return out


def activity(rel: str, cfg) -> dict[str, str]:
    """{"activity": first group of --activity-pattern in `rel`}, or {} without the flag."""
    pattern = compile_pattern(cfg.activity_pattern, "--activity-pattern")
    return {} if pattern is None else {"activity": _match(pattern, rel, "--activity-pattern")}


def check_kinds(src: Path, rels: list[str]) -> bool:
    """Whether the import is of raw recordings; DatasetError when raw recordings and images are mixed (their
    axes could not be one meta.json's)."""
    raw = [is_raw(src / r) for r in rels]
    if any(raw) and not all(raw):
        img = rels[raw.index(False)]
        rec = rels[raw.index(True)]
        raise DatasetError(f"{src}: mixes raw recordings ({rec}, ...) and images ({img}, ...); import them "
                           "into separate dataset folders")
    return bool(raw) and all(raw)


def records(path: Path, rel: str, user: str, base: str, split: str, extra: dict[str, str], cfg,
            stats: dict[str, Any]) -> Iterator[Record]:
    """One recording's windows as Records (ids base_w000, ... with --clip-seconds, else base)."""
    windows = raw_spectrograms(path, rel, chain_of(cfg), params_of(cfg), cfg.raw.get("raw_layout"))
    for i, (db, axes) in enumerate(windows):
        rid = f"{base}_w{i:03d}" if cfg.raw.get("clip_seconds") else base
        stats.setdefault("raw_axes", []).append(axes)
        stats["report"].append((f"{user}/{rid}.npy", rel, ""))
        bins = {"range_bins": "{}:{}".format(*axes["range_bins"])} if "range_bins" in axes else {}
        start = {"window_start_s": round(axes["window_start_s"], 6)}
        yield Record(user, rid, db, split, {**extra, **bins, **start})


def finish_meta(meta: dict[str, Any], cfg, stats: dict[str, Any]) -> list[str]:
    """Put the physical axes and the chain's settings into `meta` (in place); the names of axes that differ
    between recordings (left out of meta, reported)."""
    found = stats.get("raw_axes") or []
    if not found:
        return []
    varying = []
    for key in (*META_AXES, *CHAIN_FACTS):
        values = [a.get(key) for a in found]
        numeric = all(isinstance(v, (int, float)) for v in values)
        same = (np.allclose(values, values[0], rtol=1e-3, atol=0) if numeric
                else all(v == values[0] for v in values))
        if not same:
            varying.append(key)
            meta.pop(key, None)
        elif key in META_AXES:
            meta[key] = values[0]
    first = found[0]
    facts = {k: first.get(k) for k in CHAIN_FACTS if k not in varying}
    meta["raw_chain"] = {**chain_of(cfg).to_dict(), **facts, "varying": varying, "windows": len(found)}
    if "carrier_hz" in meta:
        meta["wavelength_m"] = 299_792_458.0 / float(meta["carrier_hz"])
    return varying



def report(s: dict[str, Any], out: Path, cfg, seconds: float) -> int:
    """The one-line summary of a raw import (and a warning for axes that differ between recordings)."""
    n = s["per_split"]
    print(f"import: {s['files']} raw recordings of {s['people']} people -> {s['windows']} spectrograms in "
          f"{out} ({cfg.size}x{cfg.size}, {cfg.dyn_range_db:g} dB); train/val/test "
          f"{n['train']}/{n['val']}/{n['test']} recordings in {seconds:.1f} s")
    if s["varying"]:
        print(f"import: warning: {', '.join(s['varying'])} differ between recordings, so meta.json leaves "
              "them out; give every recording the same radar settings, or cut windows of one length with "
              "--clip-seconds", file=sys.stderr)
    return 0
