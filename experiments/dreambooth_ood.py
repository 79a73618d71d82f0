"""DreamBooth's setting on another radar: `dopplergen adapt` on the lab's other people *and* the targets'
own k recordings, for one (k, seed) of the out-of-domain protocol (docs/adapt.md, section 5).

The generator then sees exactly the classifier's k recordings of each target (the protocol's rule holds) and
learns their rows together with the adapters, instead of enrolling them afterwards. One trial: the reference
CNN on the k real alone against the k real + m synthetic of the adapted pipeline (balanced mix, the
evaluator's budget), scored on the targets' test split, at ENROLLED_GUIDANCE.

    .venv/bin/python -m experiments.dreambooth_ood --pipeline checkpoints/demo --lab data/other/adapt \
        --targets data/other/targets --seed 0 --out runs/dreambooth0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", required=True)
    p.add_argument("--lab", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--m", type=int, default=30)
    a = p.parse_args()

    from models.sampling import ENROLLED_GUIDANCE
    from training.adapt import AdaptConfig, adapt
    from training.data.dataset import Record, load_dataset, write_dataset
    from training.eval.augmentation import run_trial, select_k_per_user
    from training.eval.context import Context, Log, Pool
    from training.eval.evaluate import EvalSettings
    from training.eval.filters import FilterConfig
    from training.eval.ood import target_data
    from training.eval.trials import SectionTrials

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lab, tg = load_dataset(a.lab), load_dataset(a.targets)
    t_train = tg.filter("train")
    pick = select_k_per_user(t_train.labels, a.k, a.seed)  # the protocol's own k selection of this seed
    recs = [Record(lab.users[c], Path(pth).stem, x[0], str(sp)) for x, c, pth, sp in
            zip(lab.x, lab.labels, lab.paths, lab.splits, strict=True)]
    recs += [Record(tg.users[t_train.labels[i]], Path(t_train.paths[i]).stem, t_train.x[i, 0], "train")
             for i in pick]
    data = out / "data"
    if not data.exists():
        write_dataset(data, recs, {"image_size": list(lab.x.shape[-2:]), "channels": 1,
                                   "dyn_range_db": float(lab.meta.get("dyn_range_db", 60.0))})
    pipe_dir = out / "pipeline"
    if not pipe_dir.exists():
        adapt(a.pipeline, data, pipe_dir, AdaptConfig(seed=a.seed))

    from models.pipeline import DopplerPipeline

    pipe = DopplerPipeline.load(pipe_dir)
    d = target_data(a.targets, pipe)
    log = Log(out / "trial.log")
    ctx = Context(pipe=pipe, data=d, st=EvalSettings(), steps=20, guidance=ENROLLED_GUIDANCE,
                  sampler="dpmsolver++", seed=0, device="cpu", out=out, log=log, threads=1)
    empty = Pool(np.zeros((0, 1, *pipe.image_size), np.float32), np.zeros(0, np.int64), [])
    runner = SectionTrials(ctx, empty, pipe, str(pipe_dir), FilterConfig())

    def make_generator(k, seed, x_k, y_k):  # the targets' rows were learnt in adapt, from these same k
        return ("pipe", pipe, x_k, y_k), "adapted on the lab + the targets' k (DreamBooth)"

    t = run_trial(d.train_x, d.train_y, d.train_paths, a.k, a.seed, m_per_user=a.m,
                  make_generator=make_generator, synthesize=runner.synthesize, fit_score=runner.fit_score,
                  budget_for=runner.budget_for)
    saw = sorted(Path(p).stem for p in t.generator_saw)
    assert saw == sorted(Path(t_train.paths[i]).stem for i in pick), "the generator saw other recordings"
    log(f"k={a.k} seed={a.seed}: real {t.acc_real:.3f} -> augmented {t.acc_augmented:.3f} ({t.gain:+.3f})")
    (out / "trial.json").write_text(json.dumps(dict(k=a.k, seed=a.seed, acc_real=t.acc_real,
                                                    acc_augmented=t.acc_augmented, gain=t.gain), indent=2))


if __name__ == "__main__":
    main()
