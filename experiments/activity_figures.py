"""The figures of docs/simulator.md's "Activities" section: what the simulator's activities are made of.

    python experiments/activity_figures.py --out docs/

writes
- activities-joint-angles.png: each event's joint angles (training/data/activities.py `KEYFRAMES`, through
  `event_angles`, the PCHIP curves the simulator uses) over the event's normalised time, keyframes marked;
  ankle a, knee k, hip h, the trunk's tilt a - k + h, and the keyframed shoulder and elbow angles;
- activities-one-person.png: one simulated person (make_user(3), i.e. user03 of seed 0) doing the eight
  activities: recording j does activity j, as recordings 0000-0007 of that person in
  `dopplergen simulate --activities walk,run,limp,carry,sit,stand,fall,pickup` (seed 0) are drawn; each
  panel is a 64x64 dB spectrogram with the dataset's axes (m/s, s), an event's start and end marked.

A picture, not a measurement: no conclusion beyond what the panels show. Both files repeat byte for byte
(fixed PNG metadata).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data.activities import ACTIVITIES, EVENTS, KEYFRAMES, event_angles  # noqa: E402
from training.data.users import make_user, simulate_recording  # noqa: E402
from training.eval.plots import CMAP, PNG_METADATA, pyplot  # noqa: E402

# (label, weights on [a, k, h, shoulder, elbow]): the trunk's tilt from vertical is a - k + h
ANGLES = (("ankle a", (1, 0, 0, 0, 0)), ("knee k", (0, 1, 0, 0, 0)), ("hip h", (0, 0, 1, 0, 0)),
          ("trunk a - k + h", (1, -1, 1, 0, 0)), ("shoulder", (0, 0, 0, 1, 0)), ("elbow", (0, 0, 0, 0, 1)))


def joint_angle_figure(path: Path) -> Path:
    """One panel per event: the six angles in degrees over normalised time, keyframes as dots."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(EVENTS), figsize=(12.0, 3.3), sharey=True)
    tau = np.linspace(0.0, 1.0, 201)
    for ax, event in zip(axes, EVENTS, strict=True):
        curves = np.rad2deg(event_angles(event, tau))  # (5, T): a, k, h, shoulder, elbow
        frames = np.asarray(KEYFRAMES[event]["frames"], dtype=np.float64)
        for colour, (label, w) in enumerate(ANGLES):
            w = np.asarray(w, dtype=np.float64)
            ax.plot(tau, w @ curves, color=f"C{colour}", lw=1.5, label=label)
            ax.plot(frames[:, 0], frames[:, 1:] @ w, "o", color=f"C{colour}", ms=3.5)
        for t in frames[:, 0]:
            ax.axvline(t, color="0.8", lw=0.6, zorder=0)
        ax.set_title(f"{event} ({KEYFRAMES[event]['duration_s']:g} s at tempo 1)", fontsize=9)
        ax.set_xlabel("normalised time", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("degrees", fontsize=8)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle("event joint angles (training/data/activities.py KEYFRAMES, PCHIP); dots: keyframes",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def one_person_figure(path: Path, user_seed: int = 3, size: int = 64) -> Path:
    """make_user(user_seed) doing every activity (recording j = activity j), two rows of four panels."""
    plt = pyplot()
    profile = make_user(user_seed, f"user{user_seed:02d}")
    cols = len(ACTIVITIES) // 2
    fig, axes = plt.subplots(2, cols, figsize=(2.4 * cols + 0.6, 5.4), sharex=True, sharey=True)
    image = None
    for j, (ax, activity) in enumerate(zip(axes.flat, ACTIVITIES, strict=True)):
        s = simulate_recording(profile, j, size=size, activity=activity)
        m = s.meta
        to_v = m["wavelength_m"] / 2
        half_f, half_t = abs(s.doppler_hz[1] - s.doppler_hz[0]) / 2, m["seconds_per_frame"] / 2
        extent = (s.time_s[0] - half_t, s.time_s[-1] + half_t, (s.doppler_hz[-1] - half_f) * to_v,
                  (s.doppler_hz[0] + half_f) * to_v)  # row 0 = most positive Doppler (approaching)
        image = ax.imshow(s.db, aspect="auto", cmap=CMAP, vmin=-m["dyn_range_db"], vmax=0.0, extent=extent,
                          interpolation="nearest", origin="upper")
        if activity in EVENTS:
            start, end = m["event_onset_s"], m["event_onset_s"] + m["event_duration_s"]
            for t in (start, end):
                ax.axvline(t, color="white", ls="--", lw=0.9)
            what = f"{m['event_duration_s']:.2f} s, torso peak {m['torso_peak_mps']:.2f} m/s"
        else:
            what = f"{m['speed_mps']:.2f} m/s"
        ax.set_title(f"{activity}: {what}\naspect {m['aspect_deg']:+.0f}°", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("radial velocity (m/s)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=8)
    fig.suptitle(f"one simulated person (make_user({user_seed}), {profile.height_m:.2f} m, prefers "
                 f"{profile.speed_mps:.2f} m/s), 24 GHz, {size}x{size}; events: dashed = start and end",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    bar = fig.colorbar(image, ax=list(axes.flat), fraction=0.02, pad=0.01)
    bar.set_label("dB re. peak", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.savefig(path, dpi=90, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs"), help="folder for the two PNGs (default docs/)")
    p.add_argument("--user-seed", type=int, default=3, help="make_user seed of the person (default 3)")
    p.add_argument("--size", type=int, default=64, help="spectrogram size, as the dataset's (default 64)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for out in (joint_angle_figure(args.out / "activities-joint-angles.png"),
                one_person_figure(args.out / "activities-one-person.png", args.user_seed, args.size)):
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
