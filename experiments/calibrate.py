"""Benchmark difficulty check: reference-classifier test accuracy with all training data vs k per user.

    python -m experiments.calibrate --data data/sim10 [--k 5] [--seeds 0 1]

The benchmark must be learnable (full data: >= 85 %) yet not trivial (k = 5 per user: at least 15 points
lower), leaving room for augmentation to show its value.

Measured (docs/simulator.md, data/sim10 = `dopplergen simulate` defaults, seeds 0 1, 2-core CPU): all 98 train
recordings per user 0.945 test accuracy, 5 per user 0.564: a 38-point gap, inside both targets.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from training.data.dataset import load_dataset
from training.eval.classifier import accuracy, train_classifier


def calibrate(
    data: str, k: int = 5, seeds: tuple[int, ...] = (0, 1), epochs: int = 20
) -> dict[str, list[float]]:
    """Test accuracy per seed for the full train split and for k recordings per user."""
    ds = load_dataset(data)
    train, test = ds.filter("train"), ds.filter("test")
    out: dict[str, list[float]] = {"full": [], f"k{k}": []}
    for seed in seeds:
        for name, sub in (("full", train), (f"k{k}", train.first_k_per_user(k, seed=seed))):
            t0 = time.perf_counter()
            clf = train_classifier(sub.x, sub.labels, len(ds.users), dyn_range_db=ds.dyn_range_db,
                                   epochs=epochs, seed=seed)
            acc = accuracy(clf, test.x, test.labels)
            out[name].append(acc)
            print(f"seed {seed} {name:>5}: {len(sub):5d} train -> test accuracy {acc:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--k", type=int, default=5, help="recordings per user for the few-shot run (default 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                   help="classifier/subset seeds (default 0 1)")
    p.add_argument("--epochs", type=int, default=20, help="classifier epochs (default 20)")
    a = p.parse_args(argv)
    res = calibrate(a.data, a.k, tuple(a.seeds), a.epochs)
    full, few = np.mean(res["full"]), np.mean(res[f"k{a.k}"])
    ok = full >= 0.85 and full - few >= 0.15
    print(f"calibration: full {full:.3f} vs {a.k}/user {few:.3f} (gap {100 * (full - few):.1f} points) -> "
          f"{'OK' if ok else 'OUT OF RANGE'} (want full >= 0.85 and gap >= 15 points)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
