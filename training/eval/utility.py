"""Will these synthetic recordings help a classifier? An estimate from the people's own few recordings only.

Leave-one-out over the real recordings (Kohavi 1995; the per-person version of SynCheck's utility check,
MobiSys 2025): in fold f, each person's f-th recording is held out; the reference CNN (training/eval/
classifier.py) is trained on the other real recordings alone, and on them plus r synthetic per real
recording, at the same optimiser budget, and both are scored on the held-out ones. The mean paired
difference over folds is the estimated effect of ratio r; the ratio with the best estimate is recommended
(0 = use no synthetic data). `dopplergen generate --check-with DIR` runs it before exporting and refuses a
negative estimate unless --force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.eval.classifier import accuracy, train_classifier
from training.eval.stats import t_interval

RATIOS = (1.0, 3.0, 6.0)  # synthetic per real recording, tried besides the requested one


@dataclass
class UtilityEstimate:
    """Per ratio: mean leave-one-out accuracy gain over real-only, with its interval over folds."""

    k: int  # real recordings per person
    people: int
    folds: int
    gains: dict[float, dict[str, float]] = field(default_factory=dict)  # ratio -> t_interval of the gain
    acc_real: float = 0.0

    def best(self) -> tuple[float, float]:
        """(ratio, mean gain) of the best ratio; (0, 0) when no ratio helps."""
        r, g = max(((r, v["mean"]) for r, v in self.gains.items()), key=lambda t: t[1], default=(0.0, 0.0))
        return (r, g) if g > 0 else (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        ratio, gain = self.best()
        return {"k": self.k, "people": self.people, "folds": self.folds, "acc_real": self.acc_real,
                "gain_by_ratio": {str(r): v for r, v in self.gains.items()},
                "recommended_ratio": ratio, "recommended_gain": gain}


def loo_utility(real_x: np.ndarray, real_y: np.ndarray, syn_x: np.ndarray, syn_y: np.ndarray, *,
                dyn_range_db: float, ratios: tuple[float, ...] = RATIOS, seed: int = 0,
                max_folds: int = 5, min_steps: int = 150, threads: int | None = None) -> UtilityEstimate:
    """Leave-one-out estimate of each ratio's effect; labels 0..P-1 index the same people in both sets."""
    people = sorted(set(np.asarray(real_y).tolist()))
    if len(people) < 2:
        raise ValueError("the check needs recordings of at least two people (a classifier tells them apart)")
    per = {p: np.flatnonzero(real_y == p) for p in people}
    k = min(len(v) for v in per.values())
    if k < 2:
        raise ValueError("the check needs at least two recordings of each person")
    folds = min(k, max_folds)
    n_cls = max(people) + 1
    real_acc, gains = [], {r: [] for r in ratios}
    for f in range(folds):
        test = np.array([per[p][f] for p in people])
        train = np.concatenate([np.delete(per[p], f) for p in people])
        xr, yr = real_x[train], real_y[train]
        budget = max(min_steps, 20 * -(-len(train) * (1 + max(ratios)) // 64))

        def fit(x, y, s=f, budget=budget, test=test):
            clf = train_classifier(x, y, n_cls, dyn_range_db=dyn_range_db, seed=seed * 1000 + s,
                                   epochs=max(1, budget // max(1, -(-len(x) // 64))), min_steps=budget,
                                   threads=threads)
            return accuracy(clf, real_x[test], real_y[test])
        base = fit(xr, yr)
        real_acc.append(base)
        rng = np.random.default_rng([seed, f])
        for r in ratios:
            m = int(round(r * (k - 1)))
            pick = np.concatenate([rng.permutation(np.flatnonzero(syn_y == p))[:m] for p in people])
            reps = max(1, round(m / max(1, k - 1)))  # the evaluator's balanced mix
            x = np.concatenate([xr] * reps + [syn_x[pick]])
            y = np.concatenate([yr] * reps + [syn_y[pick]])
            gains[r].append(fit(x, y) - base)
    return UtilityEstimate(k=k, people=len(people), folds=folds, acc_real=float(np.mean(real_acc)),
                           gains={r: t_interval(v) for r, v in gains.items()})


def points(v: float) -> str:
    """A gain in signed points, one decimal; a float's -1e-17 reads +0.0, not -0.0."""
    return f"{round(100 * v, 1) + 0.0:+.1f}"


def report_lines(est: UtilityEstimate, requested: float) -> list[str]:
    """What the check prints: each ratio's estimate, then the recommendation."""
    lines = [f"check: leave-one-out over {est.folds} folds, {est.k} real recordings of each of {est.people} "
             f"people; real only {100 * est.acc_real:.1f}%"]
    for r, v in sorted(est.gains.items()):
        mark = "  <- requested" if abs(r - requested) < 1e-9 else ""
        lines.append(f"check:   {r:g} synthetic per real: {points(v['mean'])} points "
                     f"[{points(v['lo'])}, {points(v['hi'])}]{mark}")
    ratio, gain = est.best()
    lines.append("check: recommended: " + (f"{ratio:g} synthetic per real recording (estimated "
                                           f"{points(gain)} points), no filter" if ratio else
                                           "no synthetic data: no ratio is estimated to help"))
    return lines


def check_with(pipe: Any, users: list[str], folder: str, *, per_user: int, seed: int, sample_rows: Any,
               threads: int | None = None) -> tuple[UtilityEstimate, float]:
    """`generate --check-with`: the people's own recordings in `folder` (a dataset folder or one folder per
    person) against the export's own first samples of them (`sample_rows(items) -> (N, C, H, W) dB`, same
    seeds as the export). Returns the estimate and the requested ratio (per_user / real per person)."""
    from training.data.dataset import load_dataset
    from training.data.generated import plan_items

    try:
        ds = load_dataset(folder, channels=pipe.channels, size=pipe.image_size,
                          dyn_range_db=pipe.normalization.dyn_range_db)
    except ValueError as e:
        raise ValueError(f"--check-with {folder}: {e} (give one folder per person, at least two people, or a "
                         "dataset folder)") from None
    named = [u for u in ds.users if u in users]
    if len(named) < 2:
        raise ValueError(f"--check-with {folder}: needs recordings of at least two of the people generated "
                         f"({', '.join(users[:6])}); it has {', '.join(ds.users[:6]) or 'none'}")
    keep = np.isin(np.asarray(ds.users)[ds.labels], named)
    real_x, real_y = ds.x[keep], np.array([named.index(ds.users[i]) for i in ds.labels[keep]])
    k = int(min(np.bincount(real_y)))
    m = min(per_user, int(np.ceil(max(RATIOS) * (k - 1))))
    items = plan_items(named, m, seed)
    syn_x = np.asarray(sample_rows(items), np.float32)
    syn_y = np.array([named.index(it.user) for it in items])
    requested = round(min(per_user / max(1, k), m / max(1, k - 1)), 3)  # as many as were drawn
    est = loo_utility(real_x, real_y, syn_x, syn_y, dyn_range_db=pipe.normalization.dyn_range_db,
                      ratios=tuple(sorted({*RATIOS, requested})), seed=seed, threads=threads)
    return est, requested
