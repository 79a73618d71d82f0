"""Simulated users: a reproducible gait profile per user, and per-recording variation around it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from training.data.activities import ACTIVITIES, EVENTS, KEYFRAMES, check_activity, gait_speed, gait_variant
from training.data.radar import (
    DEFAULT_CARRIER_HZ,
    DEFAULT_DURATION_S,
    DEFAULT_DYN_RANGE_DB,
    Spectrogram,
    default_prf,
    simulate_walk,
)
from training.data.walker import VARIANT_FIELDS, Gait

MAX_SPEED_MPS = 2.0  # dataset PRF is sized for this walk speed, so every recording shares one PRF


@dataclass(frozen=True)
class UserProfile:
    """One simulated person: body size, preferred speed and individual gait quirks (drawn from a seed)."""

    user_id: str
    seed: int
    height_m: float  # body height; all segment lengths are Boulic fractions of it
    speed_mps: float  # preferred walking speed
    gait: Gait  # arm swing, cadence quirk, asymmetry, posture, limb RCS, ... (see simulate.Gait)

    def to_dict(self) -> dict[str, Any]:
        return dict(user_id=self.user_id, seed=self.seed, height_m=self.height_m, speed_mps=self.speed_mps,
                    gait=self.gait.to_dict())


@dataclass(frozen=True)
class Variation:
    """How much one recording varies around its user's profile (the benchmark's difficulty knobs)."""

    speed_rel: float = 0.08  # std of speed / preferred speed
    aspect_deg: float = 30.0  # aspect angle drawn uniformly in +-this (walker approaches the radar)
    # > 0: speed drawn uniformly in preferred x [1 - span, 1 + span] (clipped to 0.5..MAX_SPEED_MPS) instead
    # of normal(1, speed_rel): covers slow and fast walks of every person on purpose, for speed-conditioned
    # training
    speed_span: float = 0.0
    range_m: tuple[float, float] = (6.0, 18.0)  # radar to track centre
    snr_db: tuple[float, float] = (22.0, 35.0)  # per-pulse SNR
    clutter_db: tuple[float, float] = (-25.0, -5.0)  # static clutter relative to the body return
    gait_rel: float = 0.10  # std of the day-to-day jitter on each gait parameter (relative)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["speed_span"]:
            del d["speed_span"]  # unset: the default dataset's meta.json (and fingerprint) stay as they were
        return d


def user_ids(n: int) -> list[str]:
    """Zero-padded ids that sort in index order: user00, user01, ..."""
    width = max(2, len(str(n - 1)))
    return [f"user{i:0{width}d}" for i in range(n)]


def make_user(user_seed: int, user_id: str | None = None) -> UserProfile:
    """Draw a user profile reproducibly from `user_seed`."""
    r = np.random.default_rng([user_seed, 0x5EED])
    u = r.uniform
    gait = Gait(
        cadence_scale=float(np.clip(r.normal(1.0, 0.06), 0.88, 1.12)),
        arm_swing_deg=u(8.0, 38.0), arm_offset_deg=u(-5.0, 12.0),
        elbow_flex_deg=u(5.0, 40.0), elbow_swing_deg=u(0.0, 25.0),
        lean_deg=u(-2.0, 12.0), torso_pitch_deg=u(0.5, 3.0), torsion_deg=u(2.0, 9.0),
        bob=u(0.015, 0.035), surge=u(0.04, 0.14), sway_m=u(0.01, 0.045), hip_height=u(0.94, 0.97),
        clearance=u(0.04, 0.08), swing_shape=u(0.8, 1.4),
        support_shift=float(np.clip(r.normal(0, 0.02), -0.05, 0.05)),
        asymmetry=u(-0.15, 0.15), phase_skew=float(np.clip(r.normal(0, 0.02), -0.05, 0.05)),
        toe_off_deg=u(15.0, 40.0),
        shoulder_width=u(0.85, 1.15), hip_width=u(0.85, 1.15),
        girth=float(np.clip(r.normal(1.0, 0.08), 0.8, 1.25)),
        rcs_scale=tuple(float(d * np.exp(r.normal(0, 0.35))) for d in Gait().rcs_scale),
    )
    height = float(np.clip(r.normal(1.72, 0.09), 1.5, 1.98))
    speed = float(np.clip(r.normal(1.35, 0.15), 0.9, 1.8))
    return UserProfile(user_id=user_id or f"user{user_seed}", seed=int(user_seed), height_m=height,
                       speed_mps=speed,
                       gait=gait)


def _jitter_gait(gait: Gait, r: np.random.Generator, rel: float) -> Gait:
    """Day-to-day variation: every scalar gait parameter times (1 + N(0, rel)); offsets get an additive
    share."""
    changes: dict[str, Any] = {}
    for f in fields(Gait):
        if f.name in VARIANT_FIELDS:  # set by an activity after the jitter (walker.Gait); no draw
            continue
        val = getattr(gait, f.name)
        if isinstance(val, tuple):
            changes[f.name] = tuple(float(v * np.exp(r.normal(0, rel))) for v in val)
        elif f.name in ("support_shift", "asymmetry", "phase_skew"):
            changes[f.name] = float(val + r.normal(0, rel * 0.1))
        elif f.name in ("arm_offset_deg", "lean_deg"):
            changes[f.name] = float(val + r.normal(0, rel * 20))
        else:
            changes[f.name] = float(val * (1 + r.normal(0, rel)))
    return replace(gait, **changes)


def _speed(preferred: float, v: Variation, r: np.random.Generator) -> float:
    if v.speed_span > 0:
        return float(np.clip(preferred * r.uniform(1 - v.speed_span, 1 + v.speed_span), 0.5, MAX_SPEED_MPS))
    return float(preferred * max(0.7, 1 + r.normal(0, v.speed_rel)))


def recording_kwargs(profile: UserProfile, rec_seed: int, variation: Variation | None = None,
                     activity: str = "walk", duration_s: float = DEFAULT_DURATION_S) -> dict[str, Any]:
    """simulate_walk keyword arguments for one recording of `profile` doing `activity` (reproducible from
    rec_seed; a walk draws exactly what it drew before activities existed)."""
    v = variation or Variation()
    key = [profile.seed, rec_seed, 0xD0] + ([] if check_activity(activity) == "walk"
                                            else [1 + ACTIVITIES.index(activity)])
    r = np.random.default_rng(key)
    kw = dict(
        height_m=profile.height_m,
        speed_mps=_speed(profile.speed_mps, v, r),
        aspect_deg=float(r.uniform(-v.aspect_deg, v.aspect_deg)),
        range_m=float(r.uniform(*v.range_m)),
        start_phase=float(r.uniform()),
        snr_db=float(r.uniform(*v.snr_db)),
        clutter_db=float(r.uniform(*v.clutter_db)),
        gait=_jitter_gait(profile.gait, r, v.gait_rel),
        seed=int(r.integers(2**31)),
    )
    if activity == "walk":
        return kw
    kw["activity"] = activity
    if activity in EVENTS:  # the person's own tempo (slower walkers move slower), the event inside the window
        if activity == "fall":  # gravity sets a fall's pace, not the person
            kw["tempo"] = float(np.clip(np.exp(r.normal(0, 0.04)), 0.92, 1.08))
        else:
            kw["tempo"] = float(np.clip(kw["gait"].cadence_scale * np.exp(r.normal(0, 0.1)), 0.7, 1.4))
        room = duration_s - KEYFRAMES[activity]["duration_s"] * kw["tempo"] - 0.4
        kw["onset_s"] = float(0.2 + r.uniform(0, max(room, 0.0)))
    else:
        kw["speed_mps"] = gait_speed(activity, kw["speed_mps"])
        kw["gait"] = gait_variant(activity, kw["gait"], kw["speed_mps"], r)
    return kw


def simulate_recording(profile: UserProfile, rec_seed: int, *, carrier_hz: float = DEFAULT_CARRIER_HZ,
                       size: int | tuple[int, int] | None = 64, duration_s: float = DEFAULT_DURATION_S,
                       dyn_range_db: float = DEFAULT_DYN_RANGE_DB, prf_hz: float | None = None,
                       variation: Variation | None = None, activity: str = "walk") -> Spectrogram:
    """One recording of `profile` doing `activity`: its per-recording draw fed to simulate_walk."""
    kw = recording_kwargs(profile, rec_seed, variation, activity, duration_s)
    # One PRF for the whole dataset (sized for the fastest plausible walk) keeps meta.json exact.
    prf = prf_hz or default_prf(carrier_hz, MAX_SPEED_MPS)
    return simulate_walk(carrier_hz=carrier_hz, prf_hz=prf, duration_s=duration_s, size=size,
                         dyn_range_db=dyn_range_db, **kw)
