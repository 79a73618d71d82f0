"""Boulic-Thalmann walker: a 16-ellipsoid body whose segment endpoints follow the gait over time.

Conventions (also in docs/simulator.md): world frame x = walking direction, y = left, z = up; the walker's
track is centred on x = 0. The radar return and spectrogram of the walk are in training/data/radar.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator


# ---------------------------------------------------------------------------------------------- body
@dataclass(frozen=True)
class Gait:
    """Individual gait parameters on top of the Boulic-Thalmann model; the defaults are an average walker."""

    cadence_scale: float = 1.0  # multiplies the Boulic cycle duration Dc (longer = slower cadence)
    arm_swing_deg: float = 22.0  # shoulder flexion amplitude (peak, degrees)
    arm_offset_deg: float = 0.0  # mean shoulder flexion (+ = hands carried forward)
    elbow_flex_deg: float = 18.0  # mean elbow flexion
    elbow_swing_deg: float = 12.0  # extra elbow flexion when the arm is forward
    lean_deg: float = 4.0  # forward torso lean (posture)
    torso_pitch_deg: float = 1.5  # torso pitch oscillation amplitude (twice per cycle)
    torsion_deg: float = 5.0  # pelvis yaw amplitude; the shoulders counter-rotate
    bob: float = 0.025  # vertical pelvis oscillation amplitude, as a fraction of leg length
    surge: float = 0.08  # forward speed oscillation amplitude, as a fraction of the mean speed
    sway_m: float = 0.025  # lateral pelvis sway amplitude
    hip_height: float = 0.955  # pelvis height above the ankles at its lowest, as a fraction of leg length
    clearance: float = 0.06  # swing-foot lift, as a fraction of height
    swing_shape: float = 1.0  # >1 = more impulsive foot swing (higher peak foot speed)
    support_shift: float = 0.0  # added to the Boulic support fraction Ds/Dc (stance vs swing time)
    asymmetry: float = 0.0  # left leg/arm amplitude = (1 - asymmetry) x right; left stance longer if > 0
    phase_skew: float = 0.0  # left leg lags 0.5 + phase_skew cycles behind the right (uneven steps)
    toe_off_deg: float = 30.0  # foot plantar-flexion at toe-off
    shoulder_width: float = 1.0  # scales the Boulic shoulder half-width
    hip_width: float = 1.0  # scales the Boulic hip half-width
    girth: float = 1.0  # scales all segment radii (build)
    # RCS multipliers for head, torso group, arms, legs, feet. Limbs default to 0.5 (-3 dB): the ellipsoid
    # formula's broadside RCS (pi c^2) ignores radius and overstates thin limbs; at -3 dB the torso line
    # stays the strongest persistent return at oblique aspects too, as in measured spectrograms.
    rcs_scale: tuple[float, float, float, float, float] = (1.0, 1.0, 0.5, 0.5, 1.0)
    # Activity variants (training/data/activities.py); 0 = plain walking, and then they are left out of
    # to_dict() and of the day-to-day jitter, so a walking dataset stays byte-identical.
    cycle_s: float = 0.0  # > 0: gait cycle duration instead of Boulic's (running)
    support_fraction: float = 0.0  # > 0: stance share of the cycle instead of Boulic's (< 0.5 = flight phase)
    left_stance_shift: float = 0.0  # added to the left leg's stance share (< 0: antalgic limp)
    hold_left: float = 0.0  # 0..1: the left arm holds a load in front (no swing, elbow at 90 deg)
    hold_right: float = 0.0  # 0..1: the same for the right arm

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rcs_scale"] = list(self.rcs_scale)
        for name in VARIANT_FIELDS:
            if not d[name]:
                del d[name]
        return d


VARIANT_FIELDS = ("cycle_s", "support_fraction", "left_stance_shift", "hold_left", "hold_right")
HOLD_SHOULDER_DEG, HOLD_ELBOW_DEG = 20.0, 90.0  # a load carried in front with both forearms level


# Boulic-Thalmann segment lengths as fractions of height (Boulic, Magnenat-Thalmann & Thalmann 1990, as in
# V.C. Chen's The Micro-Doppler Effect in Radar; docs/simulator.md); neck and ankle height fill the rest.
FRAC = dict(head=0.130, shoulder=0.1295, torso=0.288, hip=0.0955, upper_leg=0.245, lower_leg=0.246,
            foot=0.143, upper_arm=0.188, lower_arm=0.152, neck=0.052, ankle=0.039)
# 16 ellipsoids: (name, radius as a fraction of height, RCS group index into Gait.rcs_scale). All are
# spheroids (a = b) except the torso, whose lateral semi-axis is TORSO_WIDTH x its front-back one.
SEGMENTS = (
    ("head", 0.045, 0), ("neck", 0.030, 1), ("torso", 0.060, 1), ("pelvis", 0.060, 1),
    ("shoulder_l", 0.030, 1), ("shoulder_r", 0.030, 1),
    ("upper_arm_l", 0.025, 2), ("upper_arm_r", 0.025, 2),
    ("lower_arm_l", 0.020, 2), ("lower_arm_r", 0.020, 2),
    ("upper_leg_l", 0.040, 3), ("upper_leg_r", 0.040, 3),
    ("lower_leg_l", 0.028, 3), ("lower_leg_r", 0.028, 3),
    ("foot_l", 0.025, 4), ("foot_r", 0.025, 4),
)
SEGMENT_NAMES = tuple(s[0] for s in SEGMENTS)
TORSO_WIDTH = 1.8  # chest width / depth; makes the torso the strongest scatterer seen from the front


def boulic_cycle(height_m: float, speed_mps: float) -> dict[str, float]:
    """Boulic-Thalmann gait timing: RV = v/Ht, RLc = 1.346 sqrt(RV), Dc = RLc/RV, Ds = 0.752 Dc - 0.143."""
    ht = (FRAC["upper_leg"] + FRAC["lower_leg"]) * height_m
    rv = speed_mps / ht
    if not 0.05 <= rv <= 3.0:
        raise ValueError(f"relative velocity v/Ht = {rv:.2f} is outside the Boulic model's range (0.05..3)")
    dc = 1.346 * np.sqrt(rv) / rv
    return dict(leg_m=ht, rv=rv, cycle_s=dc, support_s=0.752 * dc - 0.143)


def _pchip_periodic(knots_p: list[float], values: list[float], p: np.ndarray) -> np.ndarray:
    """PCHIP through control points over the normalised cycle [0, 1] (first = last), wrapped one period
    either side so the slope is continuous across cycles too."""
    k, v = np.asarray(knots_p[:-1]), np.asarray(values[:-1])
    return PchipInterpolator(np.concatenate([k - 1, k, k + 1, [2.0]]),
                             np.tile(v, 3).tolist() + [v[0]])(np.mod(p, 1.0))


def _rotz(vec_xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Rotate (..., 2) xy offsets by yaw (...,) radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * vec_xy[..., 0] - s * vec_xy[..., 1], s * vec_xy[..., 0] + c * vec_xy[..., 1]], -1)


def _leg(q: np.ndarray, hip: np.ndarray, stride: float, x0: float, s_frac: float, lift: float,
         ankle_h: float, l1: float, l2: float, shape: float, toe_off: float, foot: float, offset: float):
    """One leg: non-sliding stance ankle, raised-cosine swing (Boulic support/balance timing), 2-link IK
    knee."""
    n = np.floor(q)
    p = q - n
    u = np.clip((p - s_frac) / (1.0 - s_frac), 0.0, 1.0)  # 0 during stance, 0..1 through the swing
    g = 0.5 - 0.5 * np.cos(np.pi * u ** shape) if shape != 1.0 else 0.5 - 0.5 * np.cos(np.pi * u)
    ankle = np.empty_like(hip)
    ankle[:, 0] = stride * (n + s_frac / 2 + g - offset) + x0
    ankle[:, 1] = hip[:, 1]
    ankle[:, 2] = ankle_h + lift * np.sin(np.pi * u) ** 1.5
    # Two-link inverse kinematics in the sagittal plane; a leg too short to reach rolls the foot instead.
    d_vec = ankle[:, [0, 2]] - hip[:, [0, 2]]
    d = np.linalg.norm(d_vec, axis=1)
    d0, d_max = 0.93 * (l1 + l2), 0.99 * (l1 + l2)  # soft limit: the knee never snaps straight (no IK kink)
    d_c = np.where(d < d0, d, d0 + (d_max - d0) * np.tanh((d - d0) / (d_max - d0)))
    unit = d_vec / d[:, None]
    ankle[:, [0, 2]] = hip[:, [0, 2]] + unit * d_c[:, None]
    alpha = np.arccos(np.clip((l1 ** 2 + d_c ** 2 - l2 ** 2) / (2 * l1 * d_c), -1.0, 1.0))
    ca, sa = np.cos(alpha), np.sin(alpha)  # rotate hip->ankle by +alpha: the knee bends forward
    knee = hip.copy()
    knee[:, 0] += l1 * (unit[:, 0] * ca - unit[:, 1] * sa)
    knee[:, 2] += l1 * (unit[:, 0] * sa + unit[:, 1] * ca)
    # Foot pitch (+ = toes up) over the cycle: heel strike, flat, heel rise, toe-off, swing, toes up again.
    pitch = np.deg2rad(_pchip_periodic([0.0, 0.08, s_frac - 0.15, s_frac, s_frac + 0.15, 0.9, 1.0],
                                       [12.0, 0.0, 0.0, -toe_off, -10.0, 15.0, 12.0], p))
    fdir = np.stack([np.cos(pitch), np.zeros_like(pitch), np.sin(pitch)], -1)
    heel, toe = ankle - 0.25 * foot * fdir, ankle + 0.75 * foot * fdir
    return knee, ankle, heel, toe


def body_points(t: np.ndarray, height_m: float, speed_mps: float, gait: Gait, start_phase: float,
                duration_s: float) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Segment endpoints over time: returns (A, B) each (K, T, 3) and the gait timing."""
    h, v = height_m, speed_mps
    if gait.cycle_s > 0:  # an activity's own timing (running: outside Boulic's walking model)
        leg = (FRAC["upper_leg"] + FRAC["lower_leg"]) * h
        cyc = dict(leg_m=leg, rv=v / leg, cycle_s=gait.cycle_s,
                   support_s=gait.support_fraction * gait.cycle_s)
        dc = gait.cycle_s
        s_frac = float(np.clip(gait.support_fraction + gait.support_shift, 0.2, 0.75))
    else:
        cyc = boulic_cycle(h, v)
        dc = cyc["cycle_s"] * gait.cadence_scale
        s_frac = float(np.clip(cyc["support_s"] / cyc["cycle_s"] + gait.support_shift, 0.5, 0.75))
        leg = cyc["leg_m"]
    stride = v * dc  # distance covered per gait cycle
    l1, l2 = FRAC["upper_leg"] * h, FRAC["lower_leg"] * h
    ankle_h = FRAC["ankle"] * h
    q_r = t / dc + start_phase  # right-leg cycle count (0 = right heel strike)
    q_l = q_r + 0.5 + gait.phase_skew
    p = np.mod(q_r, 1.0)
    x0 = -v * dc * start_phase - v * duration_s / 2  # centres the track on x = 0
    two_pi = 2 * np.pi

    # Pelvis: forward surge, vertical bob (highest at each mid-stance), lateral sway, yaw (torsion).
    surge_amp = gait.surge * v * dc / (2 * two_pi)
    pel = np.empty((t.size, 3))
    pel[:, 0] = v * dc * q_r + x0 + surge_amp * np.sin(2 * two_pi * (p - s_frac / 2))
    pel[:, 1] = gait.sway_m * np.sin(two_pi * (p - s_frac / 2))
    pel[:, 2] = ankle_h + leg * gait.hip_height + gait.bob * leg * (1 + np.cos(2 * two_pi * (p - s_frac / 2)))
    yaw = np.deg2rad(gait.torsion_deg) * np.sin(two_pi * p)
    hip_off = _rotz(np.array([0.0, FRAC["hip"] * h * gait.hip_width]), yaw)
    hip_l, hip_r = pel.copy(), pel.copy()
    hip_l[:, :2] += hip_off
    hip_r[:, :2] -= hip_off

    # Legs (left one lags by half a cycle, with its own amplitude for asymmetry).
    asym = 1.0 - gait.asymmetry
    common = dict(stride=stride, x0=x0, ankle_h=ankle_h, l1=l1, l2=l2, foot=FRAC["foot"] * h)
    knee_r, ank_r, heel_r, toe_r = _leg(q_r, hip_r, s_frac=s_frac,
                                        lift=gait.clearance * h, shape=gait.swing_shape,
                                        toe_off=gait.toe_off_deg, offset=0.0, **common)
    knee_l, ank_l, heel_l, toe_l = _leg(q_l, hip_l,
                                        s_frac=float(np.clip(s_frac + 0.1 * gait.asymmetry,
                                                             min(s_frac, 0.5), 0.8) + gait.left_stance_shift),
                                        lift=gait.clearance * h * asym, shape=gait.swing_shape * asym,
                                        toe_off=gait.toe_off_deg * asym,
                                        offset=0.5 + gait.phase_skew, **common)

    # Torso: lean plus a small pitch oscillation; neck and head stacked on top.
    pitch = np.deg2rad(gait.lean_deg + gait.torso_pitch_deg * np.sin(2 * two_pi * (p - s_frac / 2)))
    up = np.stack([np.sin(pitch), np.zeros_like(pitch), np.cos(pitch)], -1)
    top = pel + FRAC["torso"] * h * up
    neck = top + FRAC["neck"] * h * up
    head = neck + FRAC["head"] * h * up
    sh_off = _rotz(np.array([0.0, FRAC["shoulder"] * h * gait.shoulder_width]), -yaw)
    sh_base = top - 0.03 * h * up
    sh_l, sh_r = sh_base.copy(), sh_base.copy()
    sh_l[:, :2] += sh_off
    sh_r[:, :2] -= sh_off

    # Arms swing opposite their own leg: PCHIP through control points (back at own heel strike).
    def arm(shoulder: np.ndarray, q: np.ndarray, amp: float, hold: float) -> tuple[np.ndarray, np.ndarray]:
        c = _pchip_periodic([0.0, 0.25, 0.5, 0.75, 1.0], [-1.0, 0.0, 1.0, 0.0, -1.0], q)
        hold = float(np.clip(hold, 0.0, 1.0))
        amp = amp * (1.0 - hold)
        offset = gait.arm_offset_deg + hold * (HOLD_SHOULDER_DEG - gait.arm_offset_deg)
        flex = gait.elbow_flex_deg + hold * (HOLD_ELBOW_DEG - gait.elbow_flex_deg)
        a = np.deg2rad(offset + amp * gait.arm_swing_deg * c) + pitch * 0.5
        b = a + np.deg2rad(flex + amp * gait.elbow_swing_deg * 0.5 * (1 + c))
        elbow = shoulder + FRAC["upper_arm"] * h * np.stack([np.sin(a), np.zeros_like(a), -np.cos(a)], -1)
        hand = elbow + FRAC["lower_arm"] * h * np.stack([np.sin(b), np.zeros_like(b), -np.cos(b)], -1)
        return elbow, hand

    elb_l, hand_l = arm(sh_l, q_l, asym, gait.hold_left)
    elb_r, hand_r = arm(sh_r, q_r, 1.0, gait.hold_right)

    a = np.stack([neck, top, pel, hip_l, top, top, sh_l, sh_r, elb_l, elb_r, hip_l, hip_r, knee_l, knee_r,
                  heel_l, heel_r])
    b = np.stack([head, neck, top, hip_r, sh_l, sh_r, elb_l, elb_r, hand_l, hand_r, knee_l, knee_r, ank_l,
                  ank_r,
                  toe_l, toe_r])
    timing = dict(cycle_s=dc, step_s=dc / 2, support_fraction=s_frac, rv=cyc["rv"], leg_m=leg,
                  stride_m=stride)
    return a, b, timing
