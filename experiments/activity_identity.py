"""How much identity does each activity carry in real (simulated) recordings? A person classifier (the
evaluator's reference CNN) trained on one activity's train recordings only, scored on that activity's test
recordings, beside chance. If real recordings of an activity are recognised at about chance, "generated
samples of it are recognised at >= 0.7x the real rate" cannot be judged for that activity.

Conclusion (2026-12-07, data/sim10act, 10 people, 2-core CPU; docs/evaluation.md, "Activities"): see the
printed table; falls, sitting down and standing up carry little identity at 64 x 64.

    OMP_NUM_THREADS=1 python -m experiments.activity_identity --data data/sim10act --activities fall,sit,walk
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from training.data.dataset import load_dataset
    from training.eval.classifier import accuracy, train_classifier

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/sim10act")
    p.add_argument("--activities", default=None, help="comma-separated (default: every activity of the data)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    ds = load_dataset(a.data)
    if "activity" not in ds.extra:
        raise SystemExit(f"{a.data}: no activity column (simulate --activities ...)")
    tr, te = ds.filter("train"), ds.filter("test")
    act_tr = np.asarray(tr.extra["activity"]).astype(str)
    act_te = np.asarray(te.extra["activity"]).astype(str)
    acts = a.activities.split(",") if a.activities else sorted(set(act_tr))
    dyn = float(ds.meta.get("dyn_range_db", 60.0))
    print(f"{len(ds.users)} people, chance {1 / len(ds.users):.3f}")
    print("| activity | train | test | person classifier trained on this activity only |")
    print("| --- | --- | --- | --- |")
    for act in acts:
        m, n = act_tr == act, act_te == act
        clf = train_classifier(tr.x[m], tr.labels[m], len(ds.users), dyn_range_db=dyn, seed=a.seed, threads=1,
                               time_flip=False)
        print(f"| {act} | {int(m.sum())} | {int(n.sum())} | {accuracy(clf, te.x[n], te.labels[n]):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
