"""`dopplergen simulate`: write a simulated micro-Doppler dataset folder (meta.json, manifest.csv, npy,
preview)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from training.cli_types import non_negative_int, positive_float, positive_int
from training.data import simulate_raw
from training.data.activities import ACTIVITIES, parse_activities
from training.data.dataset import Record, assign_splits, write_dataset
from training.data.radar import DEFAULT_DURATION_S, DEFAULT_DYN_RANGE_DB
from training.data.users import UserProfile, Variation, make_user, simulate_recording, user_ids
from training.data.walker import SEGMENT_NAMES
from training.eval.plots import spectrogram_grid
from training.progress import progress as progress_bar

SIMULATOR_VERSION = 1  # bump when the physics changes the output for a given seed
# --cover-conditions: 0..70 deg both sides, 0.7-1.3x own
COVER_CONDITIONS = dict(aspect_deg=70.0, speed_span=0.3)
MANIFEST_EXTRAS = ("speed_mps", "aspect_deg", "range_m", "snr_db", "clutter_db", "start_phase", "height_m",
                   "cycle_s")
# with --activities: the activity, and for the events what the kinematics did (NaN = empty for the gaits;
# torso_peak_radial_mps: the torso's peak speed along the radar's line of sight, what a spectrogram shows)
ACTIVITY_EXTRAS = ("activity", "event_onset_s", "event_duration_s", "torso_peak_mps",
                   "torso_peak_radial_mps")


@dataclass
class SimulateConfig:
    """Options of one simulated dataset; written into meta.json["simulate"]."""

    users: int = 10  # number of simulated people
    per_user: int = 140  # recordings per user (~98 train / 21 val / 21 test)
    size: int = 64  # image size (doppler bins = time frames)
    carrier_ghz: float = 24.0  # 5.8, 24 and 77 are the tested carriers
    seed: int = 0  # same seed -> byte-identical dataset
    dyn_range_db: float = DEFAULT_DYN_RANGE_DB  # dB below peak kept in each image
    duration_s: float = DEFAULT_DURATION_S  # seconds per recording
    preview_per_user: int = 6  # examples per user row in preview.png (0 = no preview)
    variation: dict[str, Any] = field(default_factory=lambda: Variation().to_dict())  # per-recording spread
    activities: tuple[str, ...] = ("walk",)  # recording j of a person does activities[j % len(activities)]

    def activity(self, j: int) -> str:
        return self.activities[j % len(self.activities)]

    def describe(self) -> dict[str, Any]:
        """meta.json["simulate"]: the options (a walking-only dataset's meta stays as it was before
        activities)."""
        d = dict(vars(self))
        if tuple(self.activities) == ("walk",):
            del d["activities"]
        else:
            d["activities"] = list(self.activities)
        return d

    def validate(self) -> None:
        if self.users < 1:
            raise ValueError("--users must be >= 1")
        if self.per_user < 3:
            raise ValueError("--per-user must be >= 3 (every user needs train, val and test recordings)")
        if not 8 <= self.size <= 1024:
            raise ValueError("--size must be within 8..1024")
        if not 1.0 <= self.carrier_ghz <= 300.0:
            raise ValueError("--carrier-ghz must be within 1..300")
        if not 10.0 <= self.dyn_range_db <= 200.0:
            raise ValueError("--dyn-range-db must be within 10..200")
        if not 0.0 <= self.variation.get("aspect_deg", 0.0) <= 89.0:
            raise ValueError("--aspect-deg must be within 0..89 "
                             "(at 90 deg the walk is tangential: no torso Doppler)")
        if not 0.0 <= self.variation.get("speed_span", 0.0) <= 0.6:
            raise ValueError("--speed-span must be within 0..0.6")
        parse_activities(",".join(self.activities))
        if self.per_user < 3 * len(self.activities):
            raise ValueError(f"--per-user must be >= 3 x the {len(self.activities)} activities (every "
                             "activity needs train, val and test recordings)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SimulateConfig()
    p.add_argument("--out", type=Path, default=Path("data/sim10"),
                   help="dataset folder to write (default: data/sim10)")
    p.add_argument("--users", type=positive_int, default=d.users, help=f"simulated users (default {d.users})")
    p.add_argument("--per-user", type=positive_int, default=d.per_user,
                   help=f"recordings per user (default {d.per_user})")
    p.add_argument("--size", type=int, default=d.size, help=f"image size, doppler = time (default {d.size})")
    p.add_argument("--carrier-ghz", type=positive_float, default=d.carrier_ghz,
                   help="carrier frequency in GHz (default 24)")
    p.add_argument("--seed", type=int, default=d.seed, help="master seed (default 0)")
    p.add_argument("--dyn-range-db", type=positive_float, default=d.dyn_range_db,
                   help="dynamic range kept, dB (default 60)")
    p.add_argument("--duration-s", type=positive_float, default=d.duration_s,
                   help="seconds per recording (default 3)")
    p.add_argument("--preview-per-user", type=non_negative_int, default=d.preview_per_user,
                   help="examples per row in preview.png")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes (default 1; output is identical)")
    v = Variation()
    p.add_argument("--aspect-deg", type=float, default=v.aspect_deg,
                   help=f"aspect angle drawn uniformly in +-this many degrees (default {v.aspect_deg:g})")
    p.add_argument("--speed-span", type=float, default=v.speed_span,
                   help="> 0: speed uniform in the person's preferred speed x [1 - span, 1 + span] (default "
                        f"0: normal with {v.speed_rel:g} relative spread)")
    p.add_argument("--activities", default="walk",
                   help="comma-separated activities each person does, in turn over their recordings: "
                        f"{','.join(ACTIVITIES)} (default walk); writes the manifest column 'activity'")
    p.add_argument("--raw", choices=simulate_raw.KINDS, default=None,
                   help="write raw recordings instead, for `dopplergen import`: fmcw-dat (Ancortek/Glasgow "
                        ".dat beat signal) or slow-time (complex .npy); prints the import command")
    p.add_argument("--cover-conditions", action="store_true",
                   help="cover the condition space for speed/aspect-conditioned training: --aspect-deg "
                        f"{COVER_CONDITIONS['aspect_deg']:g} --speed-span {COVER_CONDITIONS['speed_span']:g}")


def user_profiles(cfg: SimulateConfig) -> list[UserProfile]:
    """The dataset's users; user i's profile depends only on (seed, i)."""
    return [make_user(cfg.seed * 100_003 + i, uid) for i, uid in enumerate(user_ids(cfg.users))]


def _simulate_one(job: tuple[UserProfile, int, SimulateConfig]) -> tuple[np.ndarray, dict[str, Any]]:
    profile, j, cfg = job
    s = simulate_recording(profile, j, carrier_hz=cfg.carrier_ghz * 1e9, size=cfg.size,
                           duration_s=cfg.duration_s,
                           dyn_range_db=cfg.dyn_range_db, variation=Variation(**cfg.variation),
                           activity=cfg.activity(j))
    return s.db, s.meta


def dataset_meta(cfg: SimulateConfig, profiles: list[UserProfile]) -> dict[str, Any]:
    """meta.json content: the radar/STFT axes (shared by every recording) plus the simulate options."""
    _, m = _simulate_one((profiles[0], 0, cfg))
    keep = ("carrier_hz", "wavelength_m", "prf_hz", "window", "window_length", "hop", "nfft",
            "doppler_hz_per_bin",
            "seconds_per_frame", "doppler_axis", "dyn_range_db", "velocity_span_mps", "duration_s")
    meta = {k: m[k] for k in keep}
    meta.update(
        doppler_hz_row0=m["velocity_span_mps"][1] * 2 / m["wavelength_m"] - m["doppler_hz_per_bin"] / 2,
        image_size=[cfg.size, cfg.size], channels=1, source="simulated", users=[p.user_id for p in profiles],
        simulate={**cfg.describe(), "simulator_version": SIMULATOR_VERSION, "segments": list(SEGMENT_NAMES),
                  "profiles": [p.to_dict() for p in profiles]},
    )
    return meta


def simulate_dataset(
    out: Path, cfg: SimulateConfig, workers: int = 1, progress: bool = True
) -> dict[str, Any]:
    """Simulate and write the whole folder (meta.json, manifest.csv, <user>/<id>.npy, preview.png)."""
    cfg.validate()
    profiles = user_profiles(cfg)
    meta = dataset_meta(cfg, profiles)
    jobs = [(p, j, cfg) for p in profiles for j in range(cfg.per_user)]
    splits = {p.user_id: assign_splits(cfg.per_user, seed=p.seed) for p in profiles}
    previews: dict[str, list[np.ndarray]] = {p.user_id: [] for p in profiles}
    bar = progress_bar(total=len(jobs), desc="simulate", unit="spec", disable=not progress)

    def records(results: Iterator[tuple[np.ndarray, dict[str, Any]]]) -> Iterator[Record]:
        for (profile, j, _), (db, m) in zip(jobs, results, strict=True):
            if len(previews[profile.user_id]) < cfg.preview_per_user:
                previews[profile.user_id].append(db)
            extra = {k: m[k] for k in MANIFEST_EXTRAS}
            if cfg.activities != ("walk",):
                extra.update({k: m.get(k, float("nan")) for k in ACTIVITY_EXTRAS})
            yield Record(profile.user_id, f"{j:04d}", db, splits[profile.user_id][j], extra)
            bar.update(1)

    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            write_dataset(out, records(pool.imap(_simulate_one, jobs, chunksize=8)), meta)  # ordered imap
    else:
        write_dataset(out, records(map(_simulate_one, jobs)), meta)
    bar.close()
    if cfg.preview_per_user > 0:
        rows = [(uid, imgs) for uid, imgs in previews.items()]
        what = "walks" if cfg.activities == ("walk",) else ", ".join(cfg.activities)
        spectrogram_grid(rows, meta, out / "preview.png",
                         title=f"simulated {what}, {cfg.carrier_ghz:g} GHz, seed {cfg.seed}")
    return meta


def _activities(text: str) -> tuple[str, ...]:
    try:
        return parse_activities(text)
    except ValueError as e:
        raise SystemExit(str(e)) from None  # the CLI's boundary: one line on stderr, exit 2


def run(args: argparse.Namespace) -> int:
    cfg = SimulateConfig(users=args.users, per_user=args.per_user, size=args.size,
                         carrier_ghz=args.carrier_ghz,
                         seed=args.seed, dyn_range_db=args.dyn_range_db, duration_s=args.duration_s,
                         preview_per_user=args.preview_per_user,
                         variation=Variation(aspect_deg=args.aspect_deg,
                                             speed_span=args.speed_span).to_dict(),
                         activities=_activities(args.activities))
    if args.cover_conditions:
        cfg.variation.update(COVER_CONDITIONS)
    try:
        cfg.validate()
    except ValueError as e:
        raise SystemExit(str(e)) from None  # the CLI's boundary: one line on stderr, exit 2
    t0 = time.perf_counter()
    if getattr(args, "raw", None):
        print(f"simulate: writing {cfg.users * cfg.per_user} raw {args.raw} recordings of "
              f"{cfg.duration_s:g} s, about {simulate_raw.estimated_mb(cfg, args.raw):.1f} MB, to {args.out}")
        settings = simulate_raw.write_raw(args.out, cfg, user_profiles(cfg), args.raw)
        print(f"simulate: done in {time.perf_counter() - t0:.1f} s ({settings['carrier_hz'] / 1e9:g} GHz, "
              f"PRF {settings['prf_hz']:g} Hz); import them with:\n  "
              f"{simulate_raw.import_command(args.out, settings, cfg.size)}")
        return 0
    simulate_dataset(args.out, cfg, workers=max(1, args.workers))
    dt = time.perf_counter() - t0
    n = cfg.users * cfg.per_user
    print(f"simulate: wrote {n} spectrograms ({cfg.users} users x {cfg.per_user}, {cfg.size}x{cfg.size}) to "
          f"{args.out} in {dt:.1f} s ({n / dt:.0f}/s)")
    return 0
