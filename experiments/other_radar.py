"""Another radar's data set, made with this project's own means: the simulator's walkers rendered the way a
different radar and processing chain would see them, as the out-of-domain test bed of `dopplergen adapt`
(docs/adapt.md).

What differs from the demo's data (docs/simulator.md): carrier 5.8 GHz instead of 24 (a 2x longer STFT window:
coarser Doppler, smoother limbs), a symmetric Doppler span of +-5 m/s instead of -2..8 (the torso line sits on
other rows), clutter 0..+10 dB above the body instead of -25..-5 dB below, per-pulse SNR 8..16 dB instead of
22..35, 50 dB of dynamic range instead of 60, and 2.5 s recordings instead of 3. The people are new (seeds
disjoint from every simulate seed below 50), each recorded in sessions (one range and one day's gait jitter
per session).

Two folders: <out>/adapt (people with many recordings, train/val: what a lab has of its own radar) and
<out>/targets (other people; session 0 is their train split, the rest their test split: k recordings from one
session, tested on other sessions). The manifest records each recording's session (group), activity (walk,
as an import names it) and walking speed.

    .venv/bin/python -m experiments.other_radar --out data/other --adapt-people 6 --targets 6
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from training.data.dataset import Record, write_dataset
from training.data.radar import simulate_walk
from training.data.users import Variation, _jitter_gait, make_user, recording_kwargs

RADAR = dict(carrier_hz=5.8e9, velocity_span_mps=(-5.0, 5.0), dyn_range_db=50.0, duration_s=2.5)
VARIATION = Variation(snr_db=(8.0, 16.0), clutter_db=(0.0, 10.0))
SEED_BASE = 5_000_000  # people's seeds: far from simulate's seed * 100_003 + i for seeds below 50


def person_records(i: int, sessions: int, per_session: int, splits: list[str], size: int):
    """One person's recordings, session by session, as Records."""
    uid = f"r{i:02d}"
    prof = make_user(SEED_BASE + i, uid)
    for s in range(sessions):
        r = np.random.default_rng([SEED_BASE + i, s, 0x5E55])
        day = replace(prof, gait=_jitter_gait(prof.gait, r, 0.05))
        range_m = float(r.uniform(5.0, 15.0))
        for n in range(per_session):
            kw = recording_kwargs(day, s * 1000 + n, VARIATION)
            kw["range_m"] = range_m + float(r.normal(0, 0.5))
            spec = simulate_walk(**kw, size=size, **RADAR)
            cols = {"group": f"s{s}", "activity": "walk", "speed_mps": round(kw["speed_mps"], 4)}
            yield Record(uid, f"s{s}_{n:02d}", spec.db, splits[s] if s < len(splits) else splits[-1],
                         cols), spec.meta


def write(out: Path, people: range, sessions: int, per_session: int, splits: list[str], size: int) -> None:
    recs, last = [], None
    for i in people:
        for rec, meta in person_records(i, sessions, per_session, splits, size):
            recs.append(rec)
            last = meta
    meta = {"source": "other-radar (experiments/other_radar.py)", "image_size": [size, size], "channels": 1,
            "dyn_range_db": RADAR["dyn_range_db"], "carrier_hz": RADAR["carrier_hz"],
            "doppler_hz_per_bin": last["doppler_hz_per_bin"], "seconds_per_frame": last["seconds_per_frame"],
            "doppler_axis": last["doppler_axis"],
            "doppler_hz_row0": float(RADAR["velocity_span_mps"][1] * 2 / last["wavelength_m"]
                                     - last["doppler_hz_per_bin"] / 2)}
    write_dataset(out, recs, meta)
    print(f"other_radar: wrote {len(recs)} recordings of {len(people)} people to {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/other")
    p.add_argument("--adapt-people", type=int, default=6)
    p.add_argument("--adapt-per-person", type=int, default=40)
    p.add_argument("--targets", type=int, default=6)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--per-session", type=int, default=10)
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    out = Path(a.out)
    n_sessions = max(2, a.adapt_per_person // a.per_session)
    write(out / "adapt", range(a.adapt_people), n_sessions, a.per_session,
          ["train"] * (n_sessions - 1) + ["val"], a.size)
    write(out / "targets", range(100, 100 + a.targets), a.sessions, a.per_session, ["train", "test"], a.size)


if __name__ == "__main__":
    main()
