"""Activities beyond walking, on the same personalised body (training/data/walker.py).

Gaits (the walker with other parameters; each person's quirks, proportions and RCS carry over):
- walk: the Boulic-Thalmann walker unchanged;
- run: a flight phase (stance 38 % of the cycle; Novacheck, Gait & Posture 1998), stride frequency
  1.30 + 0.05 v Hz (Cavanagh & Kram, MSSE 1989: ~1.4-1.5 Hz at 2.5-4 m/s), higher foot lift, elbows
  near 90 deg, more arm swing and trunk lean, pelvis lowest at mid-stance;
- limp: an antalgic gait (Perry & Burnfield, Gait Analysis, ch. "Pathological gait"): the painful left
  leg's stance is shortened and its swing lower and slower, the left arm swings less, cadence slower;
- carry: both forearms hold a load in front (shoulder 20 deg, elbow 90 deg, no swing), or only the right.

Events (joint-angle keyframes over the event, PCHIP-interpolated, from rest (standing or sitting still) to
rest (but for the fall's impact), feet fixed; angles in degrees: ankle dorsiflexion a (shank tilt forward),
knee flexion k, hip flexion h, so the thigh tilts a - k and the trunk a - k + h from vertical; arms in world
angles from hanging down):
- stand (sit-to-stand, 1.8 s): Schenkman et al., Phys Ther 1990 and Kerr et al., Clin Biomech 1997: trunk
  flexes to ~45 deg before seat-off at ~35 % of the movement, then hip and knee extend together;
- sit (stand-to-sit, 2.0 s): the same path reversed, a little slower (Kralj et al., 1990);
- pickup (bend to the floor and return, 2.4 s): a semi-squat lift (Burgess-Limerick et al., 1995): hip
  flexion to ~105 deg, knee ~45 deg, trunk ~75 deg at the lowest point;
- fall (forward, from standing, 1.15 s to impact): Hsiao & Robinovitch, J Biomech 1998: the knees flex
  first, the body pivots over the feet, the arms reach forward, impact ~1 s after onset (the tempo varies
  only +-8 %: gravity sets it); peak trunk speeds of falls are 1.5-4 m/s against < 1 m/s for daily
  activities (Wu, J Biomech 2000; Bourke et al. 2007), which tests/training/data/test_activities.py checks.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy.interpolate import CubicHermiteSpline, PchipInterpolator

from training.data.walker import FRAC, Gait

GAITS = ("walk", "run", "limp", "carry")
EVENTS = ("sit", "stand", "fall", "pickup")
ACTIVITIES = GAITS + EVENTS

# speed of each gait relative to the person's preferred walking speed (clipped to RUN_SPEED for run)
SPEED_FACTOR = {"walk": 1.0, "run": 1.9, "limp": 0.7, "carry": 0.9}
RUN_SPEED_MPS = (2.0, 3.0)  # jogging; the dataset's PRF (+-12 m/s at 24 GHz) keeps the feet unaliased

# Event keyframes: (normalised time, a, k, h, shoulder, elbow); see the module docstring for the sources.
KEYFRAMES = {
    "stand": dict(duration_s=1.8, frames=[
        (0.00, 0.0, 90.0, 90.0, 10.0, 20.0), (0.35, 15.0, 95.0, 125.0, 40.0, 30.0),
        (0.60, 12.0, 50.0, 70.0, 15.0, 20.0), (1.00, 0.0, 0.0, 0.0, 0.0, 15.0)]),
    "pickup": dict(duration_s=2.4, frames=[
        (0.00, 0.0, 0.0, 0.0, 0.0, 15.0), (0.40, 15.0, 45.0, 105.0, 15.0, 15.0),
        (0.55, 15.0, 45.0, 105.0, 15.0, 40.0), (1.00, 0.0, 0.0, 0.0, 0.0, 20.0)]),
    "fall": dict(duration_s=1.15, frames=[  # ends prone, knees bent, arms forward on the floor
        (0.00, 0.0, 0.0, 0.0, 0.0, 15.0), (0.35, 10.0, 35.0, 20.0, 40.0, 20.0),
        (0.70, 45.0, 55.0, 45.0, 80.0, 10.0), (1.00, 85.0, 50.0, 55.0, 90.0, 20.0)]),
}
KEYFRAMES["sit"] = dict(duration_s=2.0,
                        frames=[(1.0 - f[0],) + f[1:] for f in KEYFRAMES["stand"]["frames"][::-1]])


def check_activity(activity: str) -> str:
    if activity not in ACTIVITIES:
        raise ValueError(f"unknown activity {activity!r}; the simulator knows {', '.join(ACTIVITIES)}")
    return activity


def parse_activities(text: str) -> tuple[str, ...]:
    """`--activities walk,run,...` -> the tuple, checked (no repeats, at least one)."""
    names = tuple(a.strip() for a in str(text).split(",") if a.strip())
    if not names:
        raise ValueError("--activities needs at least one of " + ", ".join(ACTIVITIES))
    for a in names:
        check_activity(a)
    if len(set(names)) != len(names):
        raise ValueError(f"--activities repeats a name: {text!r}")
    return names


def gait_speed(activity: str, preferred_mps: float) -> float:
    """The person's speed for a gait activity (events stand in place)."""
    v = preferred_mps * SPEED_FACTOR[activity]
    return float(np.clip(v, *RUN_SPEED_MPS)) if activity == "run" else float(v)


def gait_variant(activity: str, gait: Gait, speed_mps: float, r: np.random.Generator | None = None) -> Gait:
    """The person's gait changed for `activity` (walk and the events: unchanged). `r` picks carry's arms."""
    if activity == "run":
        cycle = gait.cadence_scale / (1.30 + 0.05 * speed_mps)
        swing = float(np.clip(gait.arm_swing_deg * 1.6, 25.0, 55.0))
        return replace(gait, cycle_s=cycle, support_fraction=0.38, clearance=gait.clearance * 2.2,
                       swing_shape=gait.swing_shape * 1.2, arm_swing_deg=swing,
                       elbow_flex_deg=85.0, elbow_swing_deg=10.0, lean_deg=gait.lean_deg + 6.0,
                       bob=-0.04, hip_height=0.985, surge=gait.surge * 0.6,
                       torsion_deg=gait.torsion_deg * 1.3, toe_off_deg=max(gait.toe_off_deg, 35.0))
    if activity == "limp":
        return replace(gait, asymmetry=0.45, left_stance_shift=-0.12, phase_skew=gait.phase_skew + 0.06,
                       cadence_scale=gait.cadence_scale * 1.12, lean_deg=gait.lean_deg + 3.0,
                       torso_pitch_deg=gait.torso_pitch_deg * 1.5, sway_m=gait.sway_m * 1.8)
    if activity == "carry":
        both = r is None or r.uniform() < 0.5
        return replace(gait, hold_left=1.0 if both else 0.0, hold_right=1.0, lean_deg=gait.lean_deg - 3.0)
    return gait


def event_angles(activity: str, tau: np.ndarray) -> np.ndarray:
    """Joint angles (5, T) in radians [a, k, h, shoulder, elbow] at normalised event times tau (clipped to
    0..1: before the event the first pose holds, after it the last)."""
    frames = np.asarray(KEYFRAMES[activity]["frames"], dtype=np.float64)
    x, y = frames[:, 0], frames[:, 1:]
    slopes = PchipInterpolator(x, y, axis=0).derivative()(x)
    # From rest (and, but for a fall's impact, to rest): PCHIP's end slopes would start the body at full
    # speed. A zero end slope keeps the curve shape-preserving (Fritsch & Carlson 1980).
    slopes[0] = 0.0
    if activity != "fall":
        slopes[-1] = 0.0
    f = CubicHermiteSpline(x, y, slopes, axis=0)
    return np.deg2rad(f(np.clip(tau, 0.0, 1.0))).T


def event_points(t: np.ndarray, height_m: float, gait: Gait, activity: str, onset_s: float,
                 tempo: float) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Segment endpoints (A, B) each (16, T, 3), as walker.body_points, of one event starting at `onset_s`
    and lasting KEYFRAMES duration x `tempo`; the person faces +x (towards a radar at aspect 0), centred on
    x = 0, feet fixed."""
    h = height_m
    duration = KEYFRAMES[activity]["duration_s"] * tempo
    tau = (t - onset_s) / duration
    a, k, hip_flex, sh, el = event_angles(activity, tau)
    l1, l2, ankle_h = FRAC["upper_leg"] * h, FRAC["lower_leg"] * h, FRAC["ankle"] * h
    foot = FRAC["foot"] * h

    def along(angle: np.ndarray, length: float, down: bool = False) -> np.ndarray:
        """(T, 3) vector of `length` tilted `angle` forward from up (or from down)."""
        z = -np.cos(angle) if down else np.cos(angle)
        return length * np.stack([np.sin(angle), np.zeros_like(angle), z], -1)

    ankle = np.zeros((t.size, 3))
    ankle[:, 0] = -0.1 * h  # the feet a little behind x = 0, so the body's centre is near the track centre
    ankle[:, 2] = ankle_h
    knee = ankle + along(a, l2)
    thigh, trunk = a - k, a - k + hip_flex
    pel = knee + along(thigh, l1)
    up = along(trunk, 1.0)
    top = pel + FRAC["torso"] * h * up
    neck = top + FRAC["neck"] * h * up
    head = neck + FRAC["head"] * h * up
    y = np.array([0.0, 1.0, 0.0])

    def side(p: np.ndarray, half: float) -> tuple[np.ndarray, np.ndarray]:
        return p + half * y, p - half * y

    hip_l, hip_r = side(pel, FRAC["hip"] * h * gait.hip_width)
    knee_l, knee_r = side(knee, FRAC["hip"] * h * gait.hip_width)
    ank_l, ank_r = side(ankle, FRAC["hip"] * h * gait.hip_width)
    fdir = np.array([1.0, 0.0, 0.0])
    heel_l, heel_r = ank_l - 0.25 * foot * fdir, ank_r - 0.25 * foot * fdir
    toe_l, toe_r = ank_l + 0.75 * foot * fdir, ank_r + 0.75 * foot * fdir
    sh_l, sh_r = side(top - 0.03 * h * up, FRAC["shoulder"] * h * gait.shoulder_width)
    arm = sh + np.deg2rad(gait.arm_offset_deg)
    fore = arm + el + np.deg2rad(gait.elbow_flex_deg) * 0.5
    upper, lower = along(arm, FRAC["upper_arm"] * h, down=True), along(fore, FRAC["lower_arm"] * h, down=True)
    elb_l, elb_r = sh_l + upper, sh_r + upper
    hand_l, hand_r = elb_l + lower, elb_r + lower
    seg_a = np.stack([neck, top, pel, hip_l, top, top, sh_l, sh_r, elb_l, elb_r, hip_l, hip_r, knee_l, knee_r,
                      heel_l, heel_r])
    seg_b = np.stack([head, neck, top, hip_r, sh_l, sh_r, elb_l, elb_r, hand_l, hand_r, knee_l, knee_r, ank_l,
                      ank_r, toe_l, toe_r])
    centre = 0.5 * (pel + top)  # the torso's centre: what the read-outs call the torso
    dt = np.gradient(t) if t.size > 1 else np.ones(1)
    speed = np.linalg.norm(np.gradient(centre, axis=0) / dt[:, None], axis=1)
    timing = dict(event_onset_s=float(onset_s), event_duration_s=float(duration),
                  torso_peak_mps=float(speed.max()), leg_m=float(l1 + l2))
    return seg_a, seg_b, timing
