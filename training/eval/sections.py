"""The measuring sections of `dopplergen evaluate`, one function each: context in, JSON-able dict out.

The sampler sweep is in training/eval/sweep.py, the augmentation gain in training/eval/augmentation.py, and
the targets and report files in training/eval/report.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models import autoencoder as ae
from training.eval import metrics as fm
from training.eval.classifier import accuracy
from training.eval.context import Context, Pool


def reconstruction(ctx: Context) -> dict[str, Any]:
    x_model = ctx.pipe.normalization.to_model(torch.as_tensor(ctx.data.test_x))
    rec = fm.reconstruct(ctx.pipe.vae, x_model)
    out = fm.reconstruction_metrics(x_model, rec, ctx.data.dyn_range_db)
    out["space"] = ("PSNR and SSIM are computed in the normalised model space [-1, 1] (data_range = 2; "
                    "torchmetrics), which for this linear map equals PSNR in dB with data range "
                    f"{ctx.data.dyn_range_db:g} dB.")
    ctx.log(f"reconstruction: PSNR {out['psnr_db']:.2f} dB, SSIM {out['ssim']:.4f} on {out['n']} test "
            "recordings")
    if ae.is_vq(ctx.pipe.vae):  # codebook collapse is the classic VQ failure: report the usage on unseen data
        codes = torch.cat([ae.encode_codes(ctx.pipe.vae, x_model[i:i + 64]).cpu()
                           for i in range(0, len(x_model), 64)])
        out["codebook"] = ae.codebook_usage(codes, int(ctx.pipe.vae.config.num_vq_embeddings))
        ctx.log(f"codebook: perplexity {out['codebook']['perplexity']:.1f} of "
                f"{out['codebook']['num_codes']}, {100 * out['codebook']['dead_fraction']:.1f}% unused on "
                "the test split")
    return out


@dataclass
class Reference:
    clf: Any
    trtr: float
    description: str


def reference_classifier(ctx: Context) -> Reference:
    d = ctx.data
    clf = ctx.fit(d.train_x, d.train_y, seed=ctx.seed)
    trtr = accuracy(clf, d.test_x, d.test_y)
    desc = (f"training.eval.classifier UserCNN, trained on the {len(d.train_y)} real train recordings (seed "
            f"{ctx.seed}); real test accuracy (TRTR) {100 * trtr:.1f}% on {len(d.test_y)} recordings.")
    ctx.log(f"reference classifier: TRTR {trtr:.3f}")
    return Reference(clf, trtr, desc)


def generated_pool(ctx: Context) -> Pool:
    y, seeds = ctx.plan(ctx.gen_per_user)
    pool = ctx.sample(ctx.pipe, y, seeds, desc="generate pool")
    ctx.log(f"generated {len(y)} samples ({ctx.gen_per_user} per user, {ctx.sampler} {ctx.steps} steps, "
            f"guidance {ctx.guidance}) in {pool.seconds:.0f} s")
    return pool


def gan_metrics(ctx: Context, ref: Reference, pool: Pool) -> dict[str, Any]:
    affinity = accuracy(ref.clf, pool.x, pool.y)
    tstr_clf = ctx.fit(pool.x, pool.y, seed=ctx.seed)
    tstr = accuracy(tstr_clf, ctx.data.test_x, ctx.data.test_y)
    per_user = {u: float((ref.clf.predict(pool.x[pool.y == i]) == i).mean()) for i,
                u in enumerate(ctx.data.users)}
    ctx.log(f"affinity {affinity:.3f} (x{affinity / ref.trtr:.2f} of TRTR) | TSTR {tstr:.3f} "
            f"(x{tstr / ref.trtr:.2f})")
    return dict(classifier=ref.description, trtr=ref.trtr, affinity=affinity,
                affinity_ratio=affinity / ref.trtr,
                tstr=tstr, tstr_ratio=tstr / ref.trtr, affinity_per_user=per_user,
                n_generated=int(len(pool.y)))


def features(ref: Reference, x: np.ndarray) -> np.ndarray:
    """The reference classifier's penultimate features: the space of the Fréchet distance."""
    return ref.clf.features(x).astype(np.float64)


def fidelity(ctx: Context, ref: Reference, pool: Pool) -> dict[str, Any]:
    d = ctx.data
    rng = np.random.default_rng(ctx.seed)
    n = min(len(d.test_y), len(pool.y), len(d.train_y))
    f_test = features(ref, d.test_x[rng.permutation(len(d.test_y))[:n]])
    f_gen = features(ref, pool.x[rng.permutation(len(pool.y))[:n]])
    f_train = features(ref, d.train_x[rng.permutation(len(d.train_y))[:n]])
    ctx.cache["f_test_all"] = features(ref, d.test_x)
    fd_gen, fd_scale = fm.frechet_distance(f_gen, f_test), fm.frechet_distance(f_train, f_test)

    def fit_cnn(x, y, seed):
        return ctx.fit(x, y, seed=seed, num_classes=2).predict

    c2st = fm.two_sample_test(d.train_x, pool.x, fit_cnn, seed=ctx.seed)
    c2st["classifier"] = "fresh UserCNN, real train vs generated, trained on one half and scored on the other"
    bank = ctx.pipe.texture
    c2st["texture_bank"] = int(len(bank.owners)) if bank is not None else 0  # residuals the samples drew from
    # The same test on the VAE's reconstructions of real recordings: the floor any generator on this VAE can
    # reach.
    norm = ctx.pipe.normalization
    recon = norm.to_db(fm.reconstruct(ctx.pipe.vae, norm.to_model(torch.as_tensor(d.train_x)))).numpy()
    c2st_vae = fm.two_sample_test(d.train_x, recon, fit_cnn, seed=ctx.seed)
    ctx.log(f"Fréchet distance gen-test {fd_gen:.2f} vs train-test {fd_scale:.2f} | C2ST accuracy "
            f"{c2st['accuracy']:.3f} (real vs VAE reconstruction: {c2st_vae['accuracy']:.3f})")
    return dict(fd_generated_test=fd_gen, fd_train_test=fd_scale, fd_ratio=fd_gen / max(fd_scale, 1e-12),
                n=int(n),
                feature_dim=int(f_test.shape[1]), c2st=c2st, c2st_vae=c2st_vae)


def physics(ctx: Context, pool: Pool) -> dict[str, Any]:
    d = ctx.data
    try:
        real = fm.kinematic_readouts(d.test_x, d.test_y, d.users, d.meta)
    except (KeyError, TypeError, ValueError) as e:
        ctx.log(f"physics: skipped (dataset meta.json has no radar axes: {e})")
        return dict(skipped=f"meta.json lacks the radar/STFT axes ({e})", per_user={}, mean_rel_error={},
                    max_rel_error={}, method="skipped")
    res = fm.physics_consistency(real, fm.kinematic_readouts(pool.x, pool.y, d.users, d.meta))
    res["method"] = ("training.eval.metrics estimators on every real test and generated "
                     "spectrogram: mean torso-line speed, 95th-percentile upper envelope at -40 "
                     "dB (m/s) and cadence (steps/min, from the envelope's autocorrelation). "
                     "Relative error = |median(generated) - median(real)| / median(real) per "
                     "user; a user with no valid generated read-out counts as 100%. The target "
                     "applies to the mean over users; the worst user is shown too.")
    ctx.log("physics: mean relative errors "
            + ", ".join(f"{q} {v:.3f}" for q, v in res["mean_rel_error"].items()))
    return res
