"""Exploration for the two-sample gap of the demo model (issue 4); a measurement, not part of the product.

Question: is the gap (a fresh CNN tells the VAE's reconstructions from real recordings with accuracy 1.000)
only the missing noise-floor speckle? Residuals r = real - reconstruction on one half of the train split fit a
noise model: a Gaussian field with the residuals' average power spectrum, mapped per (Doppler band,
reconstruction level) bin to the residuals' empirical quantiles (Gaussian copula). The other half is then
tested: real vs reconstruction, and real vs reconstruction + noise, with evaluate's two-sample test.

    OMP_NUM_THREADS=1 python -m experiments.noise_model checkpoints/demo [BANDS]

Measured 2026-11-26 (2-core VM, checkpoints/demo, data/sim10, 490 held-out pairs, stderr 0.023):
real vs reconstruction 1.000; + noise, 1 band 0.988; + noise, 8 bands 0.947. A noise model on top of the
decoder does not close the gap: the decoder itself has to produce the texture (and sharper limb traces).
"""
import sys
import time

import numpy as np
import torch

from experiments.texture import Texture, reconstructions
from models.pipeline import DopplerPipeline
from training.data.dataset import load_dataset
from training.eval import metrics as fm
from training.eval.classifier import train_classifier


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.time()
    pipe = DopplerPipeline.load(sys.argv[1])
    x = load_dataset("data/sim10").filter("train").x  # (N, 1, 64, 64) dB
    norm = pipe.normalization
    rec = reconstructions(pipe, x)
    half = np.random.default_rng(0).permutation(len(x))
    fit_idx, use_idx = half[: len(x) // 2], half[len(x) // 2:]   # fit the noise model on one half only
    # Doppler-row bands: residual statistics per band and level
    bands = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    tex = Texture.fit(x[fit_idx], rec[fit_idx], -norm.dyn_range_db, bands=bands)
    noisy = tex.add(rec, 1)
    print(f"residual std {(x - rec)[fit_idx].std():.2f} dB; prepared in {time.time() - t0:.0f} s", flush=True)

    def fit_cnn(xa, ya, seed):
        return train_classifier(xa, ya, 2, dyn_range_db=norm.dyn_range_db, seed=seed, threads=1).predict

    for name, other in (("recon", rec[use_idx]), ("recon+noise", noisy[use_idx])):
        res = fm.two_sample_test(x[use_idx], other, fit_cnn, seed=0)
        print(f"C2ST real vs {name}: {res['accuracy']:.3f} (stderr {res['stderr']:.3f}, n_test "
              f"{res['n_test']})", flush=True)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
