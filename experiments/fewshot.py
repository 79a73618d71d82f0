"""Explore levers of the small-k augmentation gain (issue 4) without changing the evaluator.

For k real recordings per target user and a few seeds, this adapts a population pipeline to the k recordings
(new user rows only, exactly as `evaluate --fewshot` does), draws synthetic recordings and trains the
reference CNN on real-only vs real + synthetic at the evaluator's budget. Variants, all from the same adapted
generators:

- `steps`: adaptation steps of the user rows;
- `m`: synthetic per user;
- `filter`: draw 2m per user and keep the m that the k-shot real-only classifier gives the highest probability
  of the requested user (only the classifier's own k recordings are involved, so the protocol holds);
- `guidance`: sampling guidance scale;
- `recipe`: how the classifier uses the synthetic data: `mix` (one shuffled set, the evaluator's recipe),
  `balanced` (the k real repeated to as many as the synthetic, so each batch is about half real), `ft` (`mix`,
  then a short fine-tune on the k real alone; the real-only
  baseline gets the same fine-tune), `balanced-ft` (both).

It also reports the identity accuracy of the synthetic samples under a reference CNN trained on the full real
train split (a diagnostic only; that classifier never touches the gain runs).

    OMP_NUM_THREADS=1 .venv/bin/python -m experiments.fewshot --population runs/population/pipeline \
        --data data/sim10 --k 5 --seeds 0 1 2 --steps 150 500 --out runs/explore/fewshot.json

Measured 2026-11-26/27 (k = 5, m = 30, seeds 0 1 2, 2-core CPU; the table is in docs/evaluation.md, "What
moves the small-k gain"): the largest lever is a better-trained population generator (UNet 3000 instead of
1000 steps: gain +4.0 ± 1.4 points with the balanced mix at guidance 2, against +0.3 ± 2.2); guidance 2 and
the balanced mix help too; 500 instead of 150 adaptation steps and confidence filtering do not (filtering:
-6.0 ± 1.9).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from experiments import result_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--population", required=True)
    p.add_argument("--data", default="data/sim10")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, nargs="+", default=[150, 500])
    p.add_argument("--m", type=int, nargs="+", default=[30, 10])
    p.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--recipes", nargs="+", default=["mix"], choices=["mix", "balanced", "ft", "balanced-ft"])
    p.add_argument("--filters", nargs="+", type=int, default=[0, 1], help="0 = no filter, 1 = filter")
    p.add_argument("--out", default="runs/explore/fewshot.json")
    a = p.parse_args()
    torch.set_num_threads(1)

    from models.pipeline import DopplerPipeline
    from training.eval import context as sec
    from training.eval.augmentation import select_k_per_user
    from training.eval.classifier import accuracy
    from training.eval.evaluate import EvalSettings
    from training.eval.fewshot import FewShotConfig, adapt_new_users

    out, log = result_file(a.out)
    pop = DopplerPipeline.load(a.population, device="cpu")
    d = sec.load_data(a.data, pop, log)
    st = EvalSettings()
    ctx = sec.Context(pipe=pop, data=d, st=st, steps=20, guidance=3.0, sampler="dpmsolver++", seed=0,
                      device="cpu", out=out.parent, log=log, threads=1)
    ref = ctx.fit(d.train_x, d.train_y, seed=0)
    log(f"reference CNN on the full real train split: test {accuracy(ref, d.test_x, d.test_y):.3f}")
    # training.eval.classifier's defaults, as the evaluator's budget_for uses them
    epochs, floor, batch = 20, 150, 64

    def budget_for(n_total):
        return max(floor, epochs * -(-n_total // batch))

    def fit_score(x, y, seed, steps):
        clf = ctx.fit(x, y, seed=seed, epochs=max(1, -(-steps // -(-len(x) // batch))))
        return clf, accuracy(clf, d.test_x, d.test_y)

    def finetune(clf, x, y, seed, steps=100, lr=1e-3):
        """A short, low-LR fine-tune of a trained classifier on (x, y) alone, with the classifier's
        augmentation."""
        import torch.nn.functional as F

        from training.eval.classifier import _augment

        gen = torch.Generator().manual_seed(seed)
        xt = clf.norm.to_model(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        xt = xt[:, None] if xt.ndim == 3 else xt
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
        opt = torch.optim.AdamW(clf.net.parameters(), lr=lr, weight_decay=1e-3)
        clf.net.train()
        for _ in range(steps):
            b = torch.randint(0, len(xt), (min(batch, len(xt)),), generator=gen)
            loss = F.cross_entropy(clf.net(_augment(xt[b], gen)), yt[b], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        clf.net.eval()
        return accuracy(clf, d.test_x, d.test_y)

    rows = []
    for seed in a.seeds:
        idx = select_k_per_user(d.train_y, a.k, seed)
        x_k, y_k = d.train_x[idx], d.train_y[idx]
        real_cache = {}
        for steps in a.steps:
            t0 = time.perf_counter()
            pipe_k, alog = adapt_new_users(pop, x_k, y_k, d.users,
                                           FewShotConfig(steps=steps, seed=seed, lr=a.lr))
            t_adapt = time.perf_counter() - t0
            m_max = (2 if 1 in a.filters else 1) * max(a.m)
            for g in a.guidance:
                y, seeds = ctx.plan(m_max, stream=100 + seed)
                syn = ctx.sample(pipe_k, y, seeds, guidance=g, desc=f"seed {seed} steps {steps} g {g}")
                ident = float((ref.predict(syn.x) == syn.y).mean())
                for m in a.m:
                    budget = budget_for(len(idx) + m * len(d.users))
                    if budget not in real_cache:
                        real_cache[budget] = fit_score(x_k, y_k, seed, budget)
                    clf_k, acc_real = real_cache[budget]
                    probs = torch.softmax(torch.as_tensor(clf_k.logits(syn.x)),
                                          -1).numpy()[np.arange(len(syn.y)), syn.y]
                    for filt in map(bool, a.filters):
                        pick = []
                        for c in range(len(d.users)):
                            cand = np.flatnonzero(syn.y == c)
                            pick.append(cand[np.argsort(-probs[cand])[:m]] if filt else cand[:m])
                        pick = np.concatenate(pick)
                        for recipe in a.recipes:
                            reps = max(1, round(len(pick) / len(idx))) if recipe.startswith("balanced") else 1
                            x_mix = np.concatenate([np.repeat(x_k, reps, 0), syn.x[pick]])
                            y_mix = np.concatenate([np.repeat(y_k, reps, 0), syn.y[pick]])
                            clf_aug, acc_aug = fit_score(x_mix, y_mix, seed, budget)
                            acc_base = acc_real
                            if recipe.endswith("ft"):  # the real-only baseline gets the same fine-tune steps
                                acc_aug = finetune(clf_aug, x_k, y_k, seed)
                                if ("ft", budget) not in real_cache:
                                    real_cache["ft", budget] = finetune(copy.deepcopy(clf_k), x_k, y_k, seed)
                                acc_base = real_cache["ft", budget]
                            row = dict(seed=seed, steps=steps, guidance=g, m=m, filter=filt, recipe=recipe,
                                       acc_real=acc_base, acc_aug=acc_aug, gain=acc_aug - acc_base,
                                       synth_identity=ident,
                                       picked_identity=float((ref.predict(syn.x[pick])
                                                              == syn.y[pick]).mean()),
                                       adapt_s=t_adapt, adapt_loss=alog["loss_last"])
                            rows.append(row)
                            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                            for k, v in row.items()}))
                            out.write_text(json.dumps(rows, indent=1))
    # summary: mean ± std of the gain per variant
    def key_of(r):
        return r["steps"], r["guidance"], r["m"], r["filter"], r.get("recipe", "mix")

    keys = sorted({key_of(r) for r in rows})
    log("steps guidance m filter recipe | gain mean ± std (points) | synthetic identity | picked identity")
    for key in keys:
        rs = [r for r in rows if key_of(r) == key]
        gains = 100 * np.array([r["gain"] for r in rs])
        log(f"{key} | {gains.mean():+.1f} ± {gains.std(ddof=1) if len(gains) > 1 else 0:.1f} "
            f"(n={len(gains)}) | {np.mean([r['synth_identity'] for r in rs]):.3f} | "
            f"{np.mean([r['picked_identity'] for r in rs]):.3f}")


if __name__ == "__main__":
    main()
