"""Stage-1 texture levers (issue 17, lever 1), each alone against a baseline with the same budget; a measurement.

Every arm fine-tunes the shipped demo VAE (train-vae --init-from checkpoints/demo/vae) on data/sim10's train split
with the same seed, steps, batch and learning rate; only the lever differs. Then, on the EMA export:
- c2st test: evaluate's two-sample test (training.eval.metrics.two_sample_test with a fresh UserCNN, as
  training/eval/sections.py computes c2st_vae) of real test recordings vs their reconstructions;
- c2st train: the same on the train split, which is exactly the number `evaluate` reports as c2st_vae;
- PSNR / MAE of the test reconstructions (training.eval.metrics.reconstruction_metrics).
The "shipped" row is the demo VAE itself (0 steps).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m experiments.vae_levers \
        [--steps 400] [--arms shipped,baseline,gan,perceptual,gan+perceptual] [--out runs/vae_levers]

Measured 2026-11-30 (2-core shared CPU VM under load, --steps 400, batch 16, lr 1e-4, seed 0; 46 min in all;
docs/evaluation.md, "Stage-1 texture levers"). c2st test / c2st train / test PSNR:
shipped 0.990 / 1.000 / 27.27 dB; baseline fine-tune 0.990 / 1.000 / 27.58; + PatchGAN (disc_weight 0.5, start
100) 0.990 / 0.999 / 27.16; + perceptual (weight 0.5) 0.990 / 1.000 / 27.48; both 0.990 / 0.999 / 26.80.
No lever lowers the two-sample accuracy at this budget; the PatchGAN's own hinge loss fell to 0.01 (it too tells
reconstructions from real) and the GAN costs PSNR. Defaults stay off.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from models import autoencoder as ae
from models.normalization import Normalization
from training import train_vae
from training.config import resolve
from training.data.dataset import load_dataset
from training.eval import metrics as fm
from training.eval.classifier import train_classifier

INIT = "checkpoints/demo/vae"
ARMS: dict[str, dict] = {
    "baseline": {},
    "gan": dict(disc_weight=0.5, disc_start=100),
    "perceptual": dict(perceptual_weight=0.5),
    "gan+perceptual": dict(disc_weight=0.5, disc_start=100, perceptual_weight=0.5),
}


def train_arm(name: str, data: str, out: Path, steps: int, batch: int, lr: float) -> float:
    """Fine-tune one arm; returns the wall time of train-vae (perceptual-network fit included)."""
    cfg = resolve("vae", preset="demo", data=data, out=str(out), init_from=INIT, max_steps=steps, batch_size=batch,
                  lr=lr, lr_warmup_steps=20, seed=0, checkpointing_steps=steps, checkpoints_total_limit=1,
                  image_every=0, **ARMS[name])
    t0 = time.perf_counter()
    train_vae.main(cfg)
    return time.perf_counter() - t0


def measure(vae_dir: str, ds, norm: Normalization) -> dict:
    vae = ae.load_autoencoder(vae_dir).eval()

    def fit(x, y, seed):  # evaluate's fit_cnn with the default EvalSettings (sections.fidelity)
        return train_classifier(x, y, 2, dyn_range_db=norm.dyn_range_db, seed=seed, threads=1).predict

    out = {}
    for split in ("test", "train"):
        x_db = ds.filter(split).x
        x = norm.to_model(torch.as_tensor(x_db))
        rec = fm.reconstruct(vae, x)
        res = fm.two_sample_test(x_db, norm.to_db(rec).numpy(), fit, seed=0)
        out[f"c2st_{split}"], out[f"c2st_{split}_stderr"] = res["accuracy"], res["stderr"]
        if split == "test":
            out.update(fm.reconstruction_metrics(x, rec, norm.dyn_range_db))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/sim10")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--arms", default="shipped," + ",".join(ARMS))
    ap.add_argument("--out", default="runs/vae_levers")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(args.data)
    norm = Normalization.from_meta(ds.meta)
    root = Path(args.out)
    for name in args.arms.split(","):
        path = root / f"{name}.json"
        if path.is_file():  # measured already: a re-run finishes an interrupted table (a new --out re-measures)
            continue
        row: dict = dict(arm=name, steps=0, batch=args.batch, lr=args.lr, options=ARMS.get(name, {}), wall_s=0.0)
        vae_dir = INIT
        if name != "shipped":
            run = root / f"{name}-s{args.steps}"
            row.update(steps=args.steps, wall_s=train_arm(name, args.data, run, args.steps, args.batch, args.lr))
            vae_dir = str(run / "vae")
        row.update(measure(vae_dir, ds, norm))
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row, indent=2) + "\n")
        print(json.dumps(row), flush=True)
    print(f"{'arm':16s} {'steps':>5s} {'wall s':>7s} {'c2st test':>9s} {'c2st train':>10s} {'PSNR dB':>7s} {'MAE dB':>6s}")
    for name in args.arms.split(","):
        r = json.loads((root / f"{name}.json").read_text())
        print(f"{name:16s} {r['steps']:5d} {r['wall_s']:7.0f} {r['c2st_test']:9.3f} {r['c2st_train']:10.3f} "
              f"{r['psnr_db']:7.2f} {r['mae_db']:6.2f}")


if __name__ == "__main__":
    main()
