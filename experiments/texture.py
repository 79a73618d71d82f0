"""Decode the mean, sample the texture (a stage-1 lever for realism): a post-process measured outside the
product.

Speckle is incompressible: the VAE returns a smooth mean and the classifier of the two-sample test sees that.
A texture model is fitted on residuals r = x - D(E(x)) of real recordings: a stationary Gaussian field with
the residuals' average 2-D power spectrum, mapped per (Doppler band, reconstruction level) bin to the
residuals' empirical quantiles (a Gaussian copula). `Texture.add` draws a field for each decoded spectrogram.

    OMP_NUM_THREADS=2 .venv/bin/python -m experiments.texture --pipeline checkpoints/demo --data data/sim10c \
        --population-pipeline runs/population-c/pipeline --population-data runs/population-c/data --seeds 5

measures, on the same seeds as `evaluate --fewshot` at k = 5 (its default adaptation and sampler):
- the two-sample accuracy of real vs generated (the demo pipeline), plain, with the fitted texture, and with
  the product's texture bank (models/texture.py); texture and bank come from one half of the train split and
  the test uses the other half;
- the few-shot gain plain, with the fitted texture (fitted with the population's VAE on the population's own
  simulated recordings: nothing of the targets), with the population's bank (the targets have no entries, so
  they draw from it), and with a bank of the targets' own k recordings (what `evaluate --fewshot` does when
  the population pipeline has a bank).

The pipelines' own banks are switched off first: each variant sets the texture itself.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr


@dataclass
class Texture:
    amp: np.ndarray  # (H, W) sqrt of the residuals' normalised 2-D power spectrum
    edges: np.ndarray  # level bin edges (dB)
    rows: np.ndarray  # (H,) band of each Doppler row
    bins: list  # [band][level bin] -> sorted residual values
    floor_db: float  # the dB floor (-dyn_range) the result is clipped to

    @classmethod
    def fit(cls, x: np.ndarray, rec: np.ndarray, floor_db: float, bands: int = 8,
            levels: int = 12) -> Texture:
        """x, rec: (N, 1, H, W) dB recordings and their reconstructions."""
        r, lvl = (x - rec)[:, 0], rec[:, 0]
        spec = np.mean(np.abs(np.fft.fft2(r - r.mean(axis=(1, 2), keepdims=True))) ** 2, axis=0)
        edges = np.quantile(lvl, np.linspace(0, 1, levels + 1))
        rows = np.arange(r.shape[1]) * bands // r.shape[1]
        bins = [[np.sort(r[:, rows == b][(lvl[:, rows == b] >= lo) & (lvl[:, rows == b] <= hi)])
                 for lo, hi in zip(edges[:-1], edges[1:], strict=True)] for b in range(bands)]
        return cls(np.sqrt(spec / spec.mean()), edges, rows, bins, floor_db)

    def noise(self, level: np.ndarray, g: np.random.Generator) -> np.ndarray:
        field = np.real(np.fft.ifft2(np.fft.fft2(g.standard_normal(level.shape)) * self.amp))
        u = ndtr((field - field.mean()) / field.std())
        out = np.zeros_like(level)
        b = np.clip(np.searchsorted(self.edges, level, side="right") - 1, 0, len(self.edges) - 2)
        band = np.broadcast_to(self.rows[:, None], level.shape)
        for j, per_level in enumerate(self.bins):
            for k, vals in enumerate(per_level):
                m = (b == k) & (band == j)
                if len(vals):
                    out[m] = vals[np.minimum((u[m] * len(vals)).astype(int), len(vals) - 1)]
        return out

    def add(self, x: np.ndarray, seed: int) -> np.ndarray:
        g = np.random.default_rng(seed)
        return np.stack([np.clip(s[0] + self.noise(s[0], g), self.floor_db, 0)
                         for s in x])[:, None].astype(np.float32)


def reconstructions(pipe, x: np.ndarray) -> np.ndarray:
    from training.eval import metrics as fm

    norm = pipe.normalization
    return norm.to_db(fm.reconstruct(pipe.vae, norm.to_model(torch.as_tensor(x)))).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim10c")
    p.add_argument("--population-pipeline", default="runs/population-c/pipeline")
    p.add_argument("--population-data", default="runs/population-c/data")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--per-user", type=int, default=50, help="generated per user for the two-sample test")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/texture/texture.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from experiments.common import fit_score as fit_score_at_budget
    from experiments.common import open_run
    from models.pipeline import DopplerPipeline
    from models.texture import build_bank
    from training.data.dataset import load_dataset
    from training.eval import metrics as fm
    from training.eval.augmentation import fewshot_steps_for, select_k_per_user
    from training.eval.fewshot import FewShotConfig, adapt_new_users
    from training.eval.stats import format_ci, paired_difference, t_interval

    pipe, d, ctx, log, out = open_run(a.pipeline, a.data, a.out, a.threads)
    # the pipeline's own bank holds train recordings of both halves; one of half A is built below
    pipe.texture = None
    st = ctx.st
    floor = -float(pipe.normalization.dyn_range_db)
    res: dict = dict(args=vars(a))

    # ---- two-sample test on the evaluated pipeline: texture fitted on one half, tested on the other --------
    half = np.random.default_rng(0).permutation(len(d.train_y))
    fit_i, test_i = half[: len(half) // 2], half[len(half) // 2:]
    tex = Texture.fit(d.train_x[fit_i], reconstructions(pipe, d.train_x[fit_i]), floor)
    y, seeds = ctx.plan(a.per_user, stream=7)
    gen = ctx.sample(pipe, y, seeds, desc="generated").x
    rec = reconstructions(pipe, d.train_x[test_i])

    def fit_cnn(x, y, seed):
        return ctx.fit(x, y, seed=seed, num_classes=2).predict

    names = [d.users[int(k)] for k in d.train_y]
    pipe.texture = build_bank(pipe.vae, pipe.normalization, d.train_x[fit_i], [names[i] for i in fit_i])
    gen_bank = ctx.sample(pipe, y, seeds, desc="generated + bank").x
    pipe.texture = None
    c2st = {}
    for name, other in (("generated", gen), ("generated + texture", tex.add(gen, 1)),
                        ("generated + bank", gen_bank), ("reconstruction", rec),
                        ("reconstruction + texture", tex.add(rec, 2))):
        c2st[name] = fm.two_sample_test(d.train_x[test_i], other, fit_cnn, seed=0)
        log(f"C2ST real vs {name}: {c2st[name]['accuracy']:.3f} (stderr {c2st[name]['stderr']:.3f})")
    res["c2st"] = c2st

    # ---- few-shot gain at k, with and without texture (fitted on the population's own data) ----------------
    pop = DopplerPipeline.load(a.population_pipeline, device="cpu")
    pop.texture = None  # each variant below sets the few-shot generator's texture itself ("plain": none)
    px = load_dataset(a.population_data).filter("train").x
    pop_tex = Texture.fit(px, reconstructions(pop, px), floor)
    pds = load_dataset(a.population_data).filter("train")
    pop_bank = build_bank(pop.vae, pop.normalization, pds.x, [pds.users[int(k)] for k in pds.labels])
    def fit_score(x, y, seed, n_total):
        return fit_score_at_budget(ctx, x, y, seed, n_total)[1]

    rows = []
    for seed in range(a.seeds):
        t0 = time.perf_counter()
        idx = select_k_per_user(d.train_y, a.k, seed)
        x_k, y_k = d.train_x[idx], d.train_y[idx]
        gen_k, _ = adapt_new_users(pop, x_k, y_k, d.users, FewShotConfig(steps=st.fewshot_steps, seed=seed))
        y, seeds = ctx.plan(st.synth_per_user, stream=100 + seed)
        xs = ctx.sample(gen_k, y, seeds, steps=fewshot_steps_for(ctx, pop), desc=f"seed {seed}").x
        n_total = len(idx) + len(y)
        reps = max(1, round(len(y) / len(idx)))
        acc_real = fit_score(x_k, y_k, seed, n_total)
        row = dict(seed=seed, acc_real=acc_real)
        gen_k.texture = pop_bank  # targets have no entries: residuals of the population's own people
        xs_pop = ctx.sample(gen_k, y, seeds, steps=fewshot_steps_for(ctx, pop),
                            desc=f"seed {seed}, population bank").x
        gen_k.texture = build_bank(pop.vae, pop.normalization, x_k, [d.users[int(k)] for k in y_k])
        xs_k = ctx.sample(gen_k, y, seeds, steps=fewshot_steps_for(ctx, pop),
                          desc=f"seed {seed}, targets' bank").x
        gen_k.texture = None
        for name, syn in (("plain", xs), ("texture", pop_tex.add(xs, 1000 + seed)),
                          ("bank_population", xs_pop), ("bank_targets", xs_k)):
            row[name] = fit_score(np.concatenate([x_k] * reps + [syn]), np.concatenate([y_k] * reps + [y]),
                                  seed, n_total) - acc_real
        log(f"seed {seed}: real {acc_real:.3f}, gain plain {row['plain']:+.3f}, texture "
            f"{row['texture']:+.3f}, population bank {row['bank_population']:+.3f}, targets' bank "
            f"{row['bank_targets']:+.3f} ({time.perf_counter() - t0:.0f} s)")
        rows.append(row)
    res["rows"] = rows
    res["gain_plain"] = t_interval([r["plain"] for r in rows])
    res["gain_texture"] = t_interval([r["texture"] for r in rows])
    res["texture_vs_plain"] = paired_difference([r["texture"] for r in rows], [r["plain"] for r in rows])
    log(f"k = {a.k}: gain plain {format_ci(res['gain_plain'])}, texture {format_ci(res['gain_texture'])}, "
        f"texture - plain {format_ci(res['texture_vs_plain'])}")
    for v in ("bank_population", "bank_targets"):
        res[f"gain_{v}"] = t_interval([r[v] for r in rows])
        res[f"{v}_vs_plain"] = paired_difference([r[v] for r in rows], [r["plain"] for r in rows])
        log(f"k = {a.k}: gain {v} {format_ci(res[f'gain_{v}'])}, {v} - plain "
            f"{format_ci(res[f'{v}_vs_plain'])}")
    out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
