"""Enrolment method, measured: do generated samples of two newly enrolled people look like them to an
independent classifier?

Two simulated people the demo never saw (simulate --users 2 --per-user 140 --seed 1000,
the demo's settings otherwise) are enrolled one
after the other from k = 5 recordings each (models.enrolment; UNet and VAE frozen). A multinomial logistic
regression on shift-invariant features (per Doppler bin: time mean, std, 10/50/90th percentiles and the first
|FFT| magnitudes over time, i.e. the cadence), NOT the project's reference CNN, is trained on the real train
recordings of all 12 people. Reported per variant: its accuracy on the two people's real held-out recordings
(val + test splits) and on generated samples of them (requested person = label); target ratio >= 0.8.

    OMP_NUM_THREADS=2 .venv/bin/python experiments/enrol_method.py --variants today fast fast-reg

Conclusion (2026-11-30, docs/enrolment.md): at the demo's guidance 2 the enrolled people were recognised 0.41x
to 0.47x as often as their real recordings (60 or 200 steps, mean or nearest-row start); the same rows sampled
at guidance 4 reached 0.729 vs 0.714 real = 1.02x (target >= 0.8x met). Existing users: 0 dB difference.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from models.enrolment import EnrolConfig, enrol
from models.pipeline import DopplerPipeline
from models.recording import read_recording
from models.sampling import sample

VARIANTS = {  # name -> EnrolConfig overrides
    "today": dict(steps=300, batch_size=16, lr=5e-3),  # evaluate --fewshot's setting before enrolment existed
    "fast": dict(steps=60, batch_size=8, lr=2e-2),
    "fast-reg": dict(steps=60, batch_size=8, lr=2e-2, reg=1.0),
    # start far from the population mean
    "fast-noinit": dict(steps=60, batch_size=8, lr=2e-2, init_noise=5.0),
    "mid": dict(steps=120, batch_size=8, lr=1e-2),
    "short": dict(steps=30, batch_size=8, lr=3e-2),
    "nearest": dict(steps=60, batch_size=8, lr=2e-2, init="nearest"),
    "long": dict(steps=200, batch_size=8, lr=1e-2),
    "long-nearest": dict(steps=200, batch_size=8, lr=1e-2, init="nearest"),
}


def read_folder(root: Path, dyn: float) -> tuple[np.ndarray, list[str], np.ndarray]:
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    x = np.stack([read_recording(root / r["path"], r["path"], 1, dyn) for r in rows])
    return x, [r["user"] for r in rows], np.array([r["split"] for r in rows])


def features(x_db: np.ndarray) -> np.ndarray:
    """Shift-invariant per-Doppler-bin features of (N, 1, H, W) dB spectrograms."""
    s = x_db[:, 0]  # (N, H, W)
    spec = np.abs(np.fft.rfft(s - s.mean(-1, keepdims=True), axis=-1))[..., 1:9]  # (N, H, 8): cadence
    parts = [s.mean(-1), s.std(-1), *np.percentile(s, [10, 50, 90], axis=-1), *np.moveaxis(spec, -1, 0)]
    return np.concatenate(parts, axis=1).astype(np.float32)  # (N, H * 13)


class LogReg:
    """Multinomial logistic regression with L2, full-batch L-BFGS on standardised features."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2) -> None:
        f = features(x)
        self.mu, self.sd = f.mean(0), f.std(0) + 1e-6
        xt, yt = torch.tensor((f - self.mu) / self.sd), torch.tensor(y)
        self.lin = torch.nn.Linear(xt.shape[1], n_classes)
        opt = torch.optim.LBFGS(self.lin.parameters(), max_iter=300, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.lin(xt), yt) + l2 * self.lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.lin(torch.tensor((features(x) - self.mu) / self.sd)).argmax(1).numpy()

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean())


def generate(pipe: DopplerPipeline, index: int, n: int, seed0: int, guidance: float = 2.0) -> np.ndarray:
    out = [sample(pipe, [index] * len(s), s, guidance_scale=guidance).numpy()
           for s in np.array_split(np.arange(seed0, seed0 + n), -(-n // 16))]
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim10")
    p.add_argument("--new", default="data/sim_new2", help="simulate --users 2 --per-user 140 --seed 1000")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--samples", type=int, default=32, help="generated samples per new person")
    p.add_argument("--variants", nargs="+", default=["today", "fast"], choices=sorted(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=2.0, help="sampling guidance for the enrolled people")
    p.add_argument("--trained-check", type=int, default=0,
                   help="also score generated samples of this many trained users")
    p.add_argument("--out", default="runs/enrol_method.json")
    a = p.parse_args()

    base = DopplerPipeline.load(a.pipeline)
    dyn = float(base.normalization.dyn_range_db)
    x_old, u_old, s_old = read_folder(Path(a.data), dyn)
    x_new, u_new, s_new = read_folder(Path(a.new), dyn)
    new_names = sorted(set(u_new))
    names = base.users + [f"new-{n}" for n in new_names]
    y_old = np.array([base.users.index(u) for u in u_old])
    y_new = np.array([len(base.users) + new_names.index(u) for u in u_new])
    train = (s_old == "train"), (s_new == "train")
    clf = LogReg(np.concatenate([x_old[train[0]], x_new[train[1]]]),
                 np.concatenate([y_old[train[0]], y_new[train[1]]]), len(names))
    acc_old = clf.accuracy(x_old[s_old == "test"], y_old[s_old == "test"])
    held = ~train[1]
    acc_real = clf.accuracy(x_new[held], y_new[held])
    print(f"classifier (logistic regression, 12 people): real test acc, demo users {acc_old:.3f}; new people "
          f"{acc_real:.3f} ({held.sum()} recordings)", flush=True)
    trained = list(range(a.trained_check))
    if trained:  # the same classifier on generated samples of trained users: the generator's own affinity
        tx = np.concatenate([generate(base, u, a.samples // 2, 500 + u) for u in trained])
        acc_trained = clf.accuracy(tx, np.repeat(trained, a.samples // 2))
        real_t = np.isin(y_old, trained) & (s_old == "test")
        print(f"trained users {trained}: generated acc {acc_trained:.3f} vs real test "
              f"{clf.accuracy(x_old[real_t], y_old[real_t]):.3f}", flush=True)

    rng = np.random.default_rng(a.seed)
    picks = [rng.choice(np.flatnonzero(train[1] & (y_new == len(base.users) + i)), a.k, replace=False)
             for i in range(len(new_names))]
    results = dict(acc_real_demo_users=acc_old, acc_real_new=acc_real, k=a.k, variants={})
    for name in a.variants:
        cfg = EnrolConfig(seed=a.seed, **VARIANTS[name])
        pipe, t0, logs = base, time.perf_counter(), []
        for i, pick in enumerate(picks):  # one after the other, each appended to the previous pipeline
            rows, log = enrol(pipe, x_new[pick], [0] * a.k, 1, cfg)
            pipe = DopplerPipeline(
                vae=pipe.vae, denoiser=pipe.denoiser,
                user_encoder=pipe.user_encoder.with_users([names[len(base.users) + i]], rows),
                scheduler_config=pipe.scheduler_config, meta=pipe.meta,
            )
            logs.append(log)
        secs = (time.perf_counter() - t0) / len(picks)
        gx = np.concatenate([generate(pipe, len(base.users) + i, a.samples, 10_000 * (i + 1), a.guidance)
                             for i in range(len(new_names))])
        gy = np.repeat(np.arange(len(base.users), len(names)), a.samples)
        pred = clf.predict(gx)
        acc_gen = float((pred == gy).mean())
        per_person = [float((pred[gy == c] == c).mean()) for c in np.unique(gy)]
        old_check = float(np.abs(generate(pipe, 0, 2, 7) - generate(base, 0, 2, 7)).max())
        r = dict(config=VARIANTS[name], acc_generated=acc_gen, per_person=per_person, guidance=a.guidance,
                 ratio=acc_gen / acc_real, seconds_per_person=secs, loss=[lg["loss_last"] for lg in logs],
                 existing_user_max_abs_diff_db=old_check)
        results["variants"][name] = r
        print("  generated samples classified as:",
              {names[c]: int((pred == c).sum()) for c in np.unique(pred)},
              "; per person", np.round(per_person, 3).tolist())
        print(f"{name:12s} {VARIANTS[name]}: generated acc {acc_gen:.3f} = {acc_gen / acc_real:.2f}x real, "
              f"{secs:.1f} s/person, final loss {np.round(r['loss'], 3).tolist()}, existing user diff "
              f"{old_check:g} dB",
              flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
