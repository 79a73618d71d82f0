"""TSTR and affinity vs guidance scale for one or more pipelines, on the evaluator's own pool seeds (issue 4).

The evaluator's sampler sweep reports affinity and FD vs guidance from 10 samples per user; TSTR needs a full
pool (as many generated as real train per user), so it is measured here: for each pipeline and guidance, the
evaluator's main pool is drawn (same seeds as `evaluate`), the reference CNN is trained on it with a few
classifier seeds and scored on the real test split.

    OMP_NUM_THREADS=1 .venv/bin/python -m experiments.guidance_tstr --pipelines checkpoints/demo \
        --guidance 1.5 2.0 2.5 3.0 --out runs/explore/tstr.json

Measured (docs/training.md, "Why 3000 steps and guidance 2"; TRTR 0.933): at 1000 UNet steps TSTR / TRTR fell
from 0.79 to 0.71 as guidance rose from 1.5 to 3.0 while affinity rose from 0.75 to 0.95; the UNet continued
to 3000 steps reached affinity 0.971, TSTR 0.85x and Fréchet distance 12.2 at guidance 2, so the shipped
checkpoint uses 3000 steps and guidance 2.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from experiments import result_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipelines", nargs="+", required=True)
    p.add_argument("--data", default="data/sim10")
    p.add_argument("--guidance", nargs="+", default=["1.5", "2.0", "2.5", "3.0"],
                   help="guidance scales; G:GC also sets the condition guidance (compositional, "
                        "models.sampling)")
    p.add_argument("--clf-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default="runs/explore/tstr.json")
    a = p.parse_args()
    torch.set_num_threads(1)

    from models.pipeline import DopplerPipeline
    from models.sampling import resolve
    from training.eval import context as sec
    from training.eval import metrics as fm
    from training.eval.classifier import accuracy
    from training.eval.evaluate import EvalSettings

    out, log = result_file(a.out)
    rows = []
    for path in a.pipelines:
        pipe = DopplerPipeline.load(path, device="cpu")
        steps, scheduler = resolve(pipe).steps, resolve(pipe).sampler
        d = sec.load_data(a.data, pipe, log)
        ctx = sec.Context(pipe=pipe, data=d, st=EvalSettings(), steps=steps, guidance=3.0, sampler=scheduler,
                          seed=0, device="cpu", out=out.parent, log=log, threads=1)
        ref = ctx.fit(d.train_x, d.train_y, seed=0)
        trtr = accuracy(ref, d.test_x, d.test_y)
        f_test = ref.features(d.test_x).astype(np.float64)
        for spec in a.guidance:
            g, _, gc = spec.partition(":")
            g, ctx.condition_guidance = float(g), float(gc) if gc else None
            y, seeds = ctx.plan(ctx.gen_per_user)
            pool = ctx.sample(pipe, y, seeds, guidance=g, desc=f"{path} g={spec}")
            tstr = [accuracy(ctx.fit(pool.x, pool.y, seed=s), d.test_x, d.test_y) for s in a.clf_seeds]
            rng = np.random.default_rng(0)
            f_gen = ref.features(pool.x[rng.permutation(len(pool.y))[:len(d.test_y)]]).astype(np.float64)
            row = dict(pipeline=path, guidance=g, condition_guidance=ctx.condition_guidance, steps=steps,
                       scheduler=scheduler, trtr=trtr,
                       affinity=accuracy(ref, pool.x, pool.y), tstr=float(np.mean(tstr)), tstr_each=tstr,
                       tstr_ratio=float(np.mean(tstr)) / trtr, fd=fm.frechet_distance(f_gen, f_test))
            rows.append(row)
            log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
            out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
