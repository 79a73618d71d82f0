"""`dopplergen generate --check-with` on another radar's people, as a user would run it (docs/adapt.md).

Each target person of a data set (e.g. experiments/other_radar.py's targets/) is enrolled into a pipeline from
k recordings of their train split with `dopplergen enroll`; then `dopplergen generate --per-user M --check-
with` those k recordings is run, and what it printed and whether it exported is recorded. With --measure, the
gain the export would have given is measured too: the reference CNN on the k real alone vs the k real + the
samples at the recommended ratio (balanced mix, the evaluator's budget), scored on the test split, 3 seeds.

    .venv/bin/python -m experiments.check_with_ood --pipeline checkpoints/demo --targets data/other/targets \
        --out runs/check_ood --k 5 --per-user 30 --measure
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def dopplergen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", required=True)
    p.add_argument("--targets", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--per-user", type=int, default=30)
    p.add_argument("--measure", action="store_true")
    a = p.parse_args()

    from training.data.dataset import load_dataset

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(a.targets)
    train, test = ds.filter("train"), ds.filter("test")
    pipe_dir, real = out / "pipeline", out / "mine"
    src = a.pipeline
    for c, user in enumerate(ds.users):
        idx = np.flatnonzero(train.labels == c)[: a.k]
        (real / user).mkdir(parents=True, exist_ok=True)
        for i in idx:
            np.save(real / user / Path(train.paths[i]).name, train.x[i, 0])
        force = ["--force"] if src != str(pipe_dir) and pipe_dir.exists() else []
        r = dopplergen("enroll", "--pipeline", str(src), "--user", user, "--data", str(real / user),
                       "--out", str(pipe_dir), *force)
        print(r.stdout.strip().splitlines()[-1] if r.returncode == 0 else r.stderr, flush=True)
        src = str(pipe_dir)
    gen = out / "generated"
    r = dopplergen("generate", "--pipeline", str(pipe_dir), "--users", ",".join(ds.users), "--per-user",
                   str(a.per_user), "--check-with", str(real), "--out", str(gen))
    print(r.stdout + r.stderr, flush=True)
    res = {"exported": r.returncode == 0, "returncode": r.returncode, "output": r.stdout + r.stderr}
    rec = [ln for ln in r.stdout.splitlines() if "recommended:" in ln]
    res["recommended"] = rec[0] if rec else None
    if a.measure:
        from training.eval.classifier import accuracy, train_classifier

        ratio = 0.0
        if rec and "synthetic per real" in rec[0]:
            ratio = float(rec[0].split("recommended: ")[1].split()[0])
        gains = []
        if ratio > 0:
            if not gen.is_dir():  # refused: draw the recommended amount as the user would (--force)
                dopplergen("generate", "--pipeline", str(pipe_dir), "--users", ",".join(ds.users),
                           "--per-user", str(int(round(ratio * a.k))), "--out", str(gen))
            syn = load_dataset(gen)
            for seed in range(3):
                idx = np.concatenate([np.flatnonzero(train.labels == c)[: a.k] for c in range(len(ds.users))])
                xr, yr = train.x[idx], train.labels[idx]
                m = int(round(ratio * a.k))
                pick = np.concatenate([np.flatnonzero(syn.labels == c)[:m] for c in range(len(ds.users))])
                reps = max(1, round(m / a.k))
                xa = np.concatenate([xr] * reps + [syn.x[pick]])
                ya = np.concatenate([yr] * reps + [syn.labels[pick]])
                budget = max(150, 20 * -(-len(xa) // 64))
                fit = [train_classifier(x, y, len(ds.users), dyn_range_db=60.0, seed=seed, min_steps=budget,
                                        epochs=max(1, budget // -(-len(x) // 64)), threads=1)
                       for x, y in ((xr, yr), (xa, ya))]
                gains.append(accuracy(fit[1], test.x, test.labels) - accuracy(fit[0], test.x, test.labels))
        res["measured_gain_at_recommended"] = gains
        print(f"measured gain at the recommended ratio {ratio:g}: {gains}")
    (out / "result.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
