"""How strongly should a request that names an activity follow it? Activity and identity affinity of the
pipeline's own people per condition-guidance setting (compositional guidance: identity g, conditions g_c;
models/sampling.py), on the same seeds.

Conclusion (2026-12-07, the activity demo, 2-core CPU; docs/conditions.md, "Activity"): see the printed table
and docs/conditions.md; the serving default (dopplergen.json condition_guidance_scale) is set from it.

    OMP_NUM_THREADS=1 python -m experiments.activity_guidance --pipeline checkpoints/demo \\
        --data data/sim10act --settings 3:1,3:2,3:3 --per-user 3
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np


def main() -> None:
    from models.pipeline import DopplerPipeline
    from training.data.dataset import load_dataset
    from training.data.generated import derive_seed
    from training.eval.classifier import accuracy, train_classifier
    from training.eval.context import Context

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim10act")
    p.add_argument("--settings", default="3:1,3:2,3:3", help="identity:condition guidance pairs")
    p.add_argument("--per-user", type=int, default=3, help="samples per person and activity per setting")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    a = p.parse_args()
    pipe = DopplerPipeline.load(a.pipeline)
    ds = load_dataset(a.data, size=tuple(pipe.image_size))
    users = [u for u in ds.users if u in pipe.users]
    tr, te = ds.filter("train", users=users), ds.filter("test", users=users)
    vocab = list(pipe.condition_encoder.spec("activity")["values"])
    act_tr = np.asarray(tr.extra["activity"]).astype(str)
    act_te = np.asarray(te.extra["activity"]).astype(str)
    lab = lambda v: np.asarray([vocab.index(x) for x in v])  # noqa: E731
    clf_act = train_classifier(tr.x, lab(act_tr), len(vocab), dyn_range_db=60.0, seed=0, time_flip=False)
    clf_id = train_classifier(tr.x, tr.labels, len(ds.users), dyn_range_db=60.0, seed=0)
    real_act = accuracy(clf_act, te.x, lab(act_te))
    real_id = accuracy(clf_id, te.x, te.labels)
    print(f"real test: activity {real_act:.3f}, identity {real_id:.3f}")
    # the evaluator's sampling loop (Context.sample) on what it reads of a Context
    sampling = SimpleNamespace(data=SimpleNamespace(users=users), st=SimpleNamespace(batch_size=20),
                               steps=a.steps, sampler="dpmsolver++", guidance=None, guidance_arg=None,
                               condition_guidance=None, quiet=True)
    rows = []
    for setting in a.settings.split(","):
        g, gc = (float(v) for v in setting.split(":"))
        pipe.meta["condition_guidance_scale"] = gc
        per_act, per_id, t0 = {}, {}, time.perf_counter()
        for act in vocab:
            names = [u for u in users for _ in range(a.per_user)]
            seeds = [derive_seed(11, f"{u}:{act}", i % a.per_user) for i, u in enumerate(names)]
            y = np.repeat(np.arange(len(users)), a.per_user)
            x = Context.sample(sampling, pipe, y, seeds, guidance=g, given={"activity": act}).x
            per_act[act] = accuracy(clf_act, x, np.full(len(x), vocab.index(act)))
            per_id[act] = accuracy(clf_id, x, np.asarray([ds.users.index(u) for u in names]))
        row = dict(guidance=g, condition_guidance=gc, activity=per_act, identity=per_id,
                   activity_mean=float(np.mean(list(per_act.values()))),
                   identity_mean=float(np.mean(list(per_id.values()))), seconds=time.perf_counter() - t0)
        rows.append(row)
        print(f"g={g:g} g_c={gc:g}: activity mean {row['activity_mean']:.3f} (min "
              f"{min(per_act.values()):.3f}), identity mean {row['identity_mean']:.3f} | "
              + " ".join(f"{k} {v:.2f}" for k, v in per_act.items()) + f" | {row['seconds']:.0f} s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(real_activity=real_act, real_identity=real_id, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
