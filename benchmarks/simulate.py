"""Simulator throughput: vectorised simulate_walk vs a straightforward per-pulse, per-segment Python loop.

    .venv/bin/python benchmarks/simulate.py [--repeats 5] [--ref-repeats 3]

Both compute the same physics (Boulic-Thalmann poses, ellipsoid RCS, slow-time phasor sum, STFT) for the
default 3 s, 24 GHz recording; medians over repeats, measured in the same run. The reference evaluates the
body pose at every pulse and loops over the 16 segments in Python, as a direct port would.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data.activities import ACTIVITIES  # noqa: E402
from training.data.radar import default_prf, simulate_walk  # noqa: E402
from training.data.walker import SEGMENT_NAMES, SEGMENTS, TORSO_WIDTH, Gait, body_points  # noqa: E402

HEIGHT, SPEED, CARRIER, DURATION, RANGE = 1.75, 1.4, 24e9, 3.0, 12.0


def reference_return(prf: float) -> np.ndarray:
    """Slow-time return, one pulse and one segment at a time (no vectorisation)."""
    gait = Gait()
    lam = 299_792_458.0 / CARRIER
    radar = (RANGE, 0.0, 1.0)
    n = int(round(DURATION * prf))
    out = np.empty(n, dtype=np.complex128)
    for i in range(n):
        a, b, _ = body_points(np.array([i / prf]), HEIGHT, SPEED, gait, 0.0, DURATION)  # pose at this pulse
        acc = 0j
        for k, (name, radius_frac, group) in enumerate(SEGMENTS):
            ax, bx = a[k, 0], b[k, 0]
            c = [(ax[d] + bx[d]) / 2 for d in range(3)]
            e = [bx[d] - ax[d] for d in range(3)]
            half = math.sqrt(sum(v * v for v in e)) / 2
            los = [radar[d] - c[d] for d in range(3)]
            r = math.sqrt(sum(v * v for v in los))
            u_c = sum(e[d] * los[d] for d in range(3)) / (2 * half * r)
            ec = [v / (2 * half) for v in e]
            eb = [-ec[1] * ec[0], 1.0 - ec[1] * ec[1], -ec[1] * ec[2]]
            nb = max(math.sqrt(sum(v * v for v in eb)), 1e-9)
            u_b = sum(eb[d] / nb * los[d] for d in range(3)) / r
            u_a2 = min(max(1.0 - u_b * u_b - u_c * u_c, 0.0), 1.0)
            ra = radius_frac * HEIGHT * gait.girth
            rb = ra * (TORSO_WIDTH if name == "torso" else 1.0)
            rcs = math.pi * (ra * rb * half) ** 2 / (ra * ra * u_a2 + rb * rb * u_b * u_b
                                                     + half * half * u_c * u_c) ** 2
            amp = math.sqrt(rcs * gait.rcs_scale[group]) * (RANGE / r) ** 2
            acc += amp * complex(math.cos(4 * math.pi * r / lam), -math.sin(4 * math.pi * r / lam))
        out[i] = acc
    return out


def reference_walk(size: int) -> np.ndarray:
    """Reference spectrogram: looped return, then a per-frame STFT loop and a plain resize."""
    prf = default_prf(CARRIER, SPEED)
    x = reference_return(prf)
    win = int(round(0.08 * prf))
    hop = int(round(DURATION / (2 * size) * prf))
    frames = [np.abs(np.fft.fftshift(np.fft.fft(x[s:s + win] * np.hanning(win), 2 * win))) ** 2
              for s in range(0, len(x) - win + 1, hop)]
    p = np.array(frames).T[::-1]
    db = 10 * np.log10(p / p.max() + 1e-30)
    rows = np.linspace(0, p.shape[0] - 1, size).astype(int)
    cols = np.linspace(0, p.shape[1] - 1, size).astype(int)
    return np.clip(db[np.ix_(rows, cols)], -60, 0)


def rate(size: int, batch: int, repeats: int, activity: str = "walk") -> float:
    """Median spectrograms per second of the vectorised simulator (varying seed and speed)."""
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for i in range(batch):
            simulate_walk(HEIGHT, SPEED + 0.01 * i, carrier_hz=CARRIER, size=size, seed=r * batch + i,
                          activity=activity, onset_s=0.5)
        times.append((time.perf_counter() - t0) / batch)
    return 1.0 / statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the vectorised batches (median)")
    p.add_argument("--batch", type=int, default=20, help="spectrograms per vectorised repeat")
    p.add_argument("--ref-repeats", type=int, default=3, help="timed repeats of the reference loop (median)")
    a = p.parse_args()
    simulate_walk(HEIGHT, SPEED, size=64)  # warm-up (imports, caches)
    r64 = rate(64, a.batch, a.repeats)
    r256 = rate(256, a.batch, a.repeats)
    # the other activities run the same vectorised radar path (training/data/activities.py)
    others = {act: rate(64, a.batch, a.repeats, act) for act in ACTIVITIES if act != "walk"}
    ref = []
    for _ in range(a.ref_repeats):
        t0 = time.perf_counter()
        reference_walk(64)
        ref.append(time.perf_counter() - t0)
    ref_s = statistics.median(ref)
    print(f"simulate_walk 64x64:   {r64:7.1f} spectrograms/s (median of {a.repeats} x {a.batch}, 1 process)")
    print(f"simulate_walk 256x256: {r256:7.1f} spectrograms/s (median of {a.repeats} x {a.batch}, 1 process)")
    print(f"reference loop 64x64:  {1 / ref_s:7.3f} spectrograms/s ({ref_s:.2f} s each, median of "
          f"{a.ref_repeats}, {len(SEGMENT_NAMES)} segments x {int(DURATION * default_prf(CARRIER, SPEED))} "
          "pulses)")
    print(f"speed-up 64x64: {r64 * ref_s:.0f}x the loop")
    print("other activities 64x64 (spectrograms/s, same medians): "
          + ", ".join(f"{act} {r:.1f} ({r * ref_s:.0f}x the loop)" for act, r in others.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
