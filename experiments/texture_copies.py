"""Does the texture bank (stage 1's realism lever) turn samples into copies of training recordings? (a
measurement)

The bank (models/texture.py) adds to each decoded sample the residual x_j - D(E(x_j)) of the bank recording j
whose reconstruction, shifted in time, is nearest to it. If a sample were close to D(E(x_j)), the result would
be close to x_j itself. This script measures it. The bank is built from half A of the train split. For samples
with and without the bank, and for the real recordings of half B as the yardstick, it takes the RMS distance
(dB) to the nearest recording of half A, over every circular time shift:

    OMP_NUM_THREADS=2 .venv/bin/python -m experiments.texture_copies --pipeline checkpoints/demo \
        --data data/sim10c

A copy would sit near 0 dB. Real recordings sit at the distance between two real walks. Samples closer to half
A than half B is would mean the bank pulls them toward its recordings.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def nearest_rms_db(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """For each x (N, C, H, W) dB: the RMS distance to the nearest ref recording at its best circular time
    shift."""
    r = torch.as_tensor(ref, dtype=torch.float64)
    fr, nr = torch.fft.fft(r, dim=-1).conj(), r.pow(2).sum((1, 2, 3))
    out = []
    for s in torch.as_tensor(x, dtype=torch.float64):
        c = torch.fft.ifft(torch.fft.fft(s, dim=-1)[None] * fr, dim=-1).real.sum((1, 2))  # (n, W)
        d2 = s.pow(2).sum() + (nr[:, None] - 2 * c).min()
        out.append(float(d2.clamp_min(0).div(s.numel()).sqrt()))
    return np.asarray(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim10c")
    p.add_argument("--per-user", type=int, default=20, help="generated per person")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/texture-copies/copies.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from experiments.common import open_run
    from models.texture import build_bank

    pipe, d, ctx, log, out = open_run(a.pipeline, a.data, a.out, a.threads)
    half = np.random.default_rng(0).permutation(len(d.train_y))
    fit_i, test_i = half[: len(half) // 2], half[len(half) // 2:]
    names = [d.users[int(k)] for k in d.train_y]
    bank = build_bank(pipe.vae, pipe.normalization, d.train_x[fit_i], [names[i] for i in fit_i])
    y, seeds = ctx.plan(a.per_user, stream=7)
    pipe.texture = None
    plain = ctx.sample(pipe, y, seeds, desc="plain").x
    pipe.texture = bank
    textured = ctx.sample(pipe, y, seeds, desc="with the bank").x
    ref = d.train_x[fit_i]
    res = {}
    for name, x in (("real half B", d.train_x[test_i][: len(y)]), ("generated", plain),
                    ("generated + bank", textured)):
        dist = nearest_rms_db(x, ref)
        res[name] = dict(median=float(np.median(dist)), p5=float(np.percentile(dist, 5)),
                         min=float(dist.min()),
                         n=int(len(dist)))
        log(f"{name:18s} nearest recording of half A: median {res[name]['median']:.2f} dB, 5th percentile "
            f"{res[name]['p5']:.2f} dB, min {res[name]['min']:.2f} dB (n = {len(dist)})")
    out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
