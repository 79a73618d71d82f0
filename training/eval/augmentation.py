"""The augmentation-gain protocol: k-per-user selections, few-shot generators, real vs real+synthetic runs.

Rule: no real recording of a target user beyond the classifier's own k ever reaches the generator.
- k = all: the generator is the pipeline under evaluation, trained on the full train split (which is
  exactly the classifier's real data), never on the test split.
- small k: a generator pretrained on a *disjoint* simulated population is adapted to each target user from
  exactly the classifier's k recordings, by learning only new user-encoder rows with the diffusion loss while
  the UNet and VAE stay frozen (textual inversion; Gal et al., ICLR 2023): training/eval/fewshot.py, on a
  population from training/eval/population.py.
Each trial records what its generator saw, so the report (and the tests) can check the rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.eval.metrics import mean_std
from training.eval.stats import t_interval

K_VALUES: tuple[int | None, ...] = (5, 10, 20, None)  # None = all real train recordings of each user


def k_label(k: int | None) -> str:
    return "all" if k is None else str(k)


def select_k_per_user(labels: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """Sorted indices of k recordings per user (all when k is None), drawn without replacement by `seed`."""
    labels = np.asarray(labels)
    if k is None:
        return np.arange(len(labels))
    if k < 1:
        raise ValueError("k must be >= 1")
    rng = np.random.default_rng([seed, k])
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise ValueError(f"user index {c} has only {len(idx)} train recordings, fewer than k={k}")
        picks.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(picks))


def check_disjoint(train_paths: Sequence[str], test_paths: Sequence[str]) -> None:
    """Raise when a recording (by path) is in both the train and the test split."""
    both = set(map(str, train_paths)) & set(map(str, test_paths))
    if both:
        raise ValueError(f"{len(both)} recordings are in both train and test, e.g. {sorted(both)[:3]}")


# ---- the augmentation-gain experiment ----------------------------------------------------------------------
@dataclass
class Trial:
    k: str
    seed: int
    n_real: int  # real train recordings the classifier saw (all users)
    n_synthetic: int  # synthetic recordings added (all users)
    acc_real: float  # test accuracy, real only
    acc_augmented: float  # test accuracy, real + synthetic
    generator: str  # which generator made the synthetic data
    generator_saw: list[str] = field(default_factory=list)  # train paths of target users the generator saw

    @property
    def gain(self) -> float:
        return self.acc_augmented - self.acc_real


MIXES = ("balanced", "concat")  # how run_augmentation combines the k real with the synthetic recordings
# make_generator(k, seed, x_db_k, labels_k) -> (handle, description); only the classifier's k reach it.
MakeGenerator = Callable[[int | None, int, np.ndarray, np.ndarray], tuple[Any, str]]
# synthesize(handle, m_per_user, seed) -> (x_db (N,C,H,W), labels (N,)) in the dataset's user index order.
Synthesize = Callable[[Any, int, int], tuple[np.ndarray, np.ndarray]]
# fit_score(x_db, labels, seed, budget) -> test accuracy of a classifier trained on `budget` sample
# presentations (epochs = budget / len(x)), so runs on different amounts of data get the same optimisation
# budget.
FitScore = Callable[[np.ndarray, np.ndarray, int, int], float]


def run_trial(train_x: np.ndarray, train_labels: np.ndarray, train_paths: Sequence[str], k: int | None,
              seed: int, *,
              m_per_user: int, make_generator: MakeGenerator, synthesize: Synthesize, fit_score: FitScore,
              budget_for: Callable[[int], int], mix: str = "balanced") -> Trial:
    """One (k, seed) of run_augmentation: real-only vs real + m synthetic per user, at the same optimiser
    budget."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    idx = select_k_per_user(train_labels, k, seed)
    x_k, y_k = train_x[idx], np.asarray(train_labels)[idx]
    handle, desc = make_generator(k, seed, x_k, y_k)  # the generator sees x_k and nothing else
    x_syn, y_syn = synthesize(handle, m_per_user, seed)
    budget = budget_for(len(idx) + len(y_syn))
    acc_real = fit_score(x_k, y_k, seed, budget)
    reps = max(1, round(len(y_syn) / len(idx))) if mix == "balanced" else 1
    acc_aug = fit_score(np.concatenate([x_k] * reps + [x_syn]), np.concatenate([y_k] * reps + [y_syn]),
                        seed, budget)
    return Trial(k=k_label(k), seed=seed, n_real=len(idx), n_synthetic=len(y_syn), acc_real=acc_real,
                 acc_augmented=acc_aug, generator=desc, generator_saw=[str(train_paths[i]) for i in idx])


def trial_line(t: Trial) -> str:
    return f"k={t.k} seed={t.seed}: real {t.acc_real:.3f} -> augmented {t.acc_augmented:.3f} ({t.gain:+.3f})"


def run_augmentation(train_x: np.ndarray, train_labels: np.ndarray, train_paths: Sequence[str], *,
                     k_values: Sequence[int | None], seeds: Sequence[int], m_per_user: int,
                     make_generator: MakeGenerator, synthesize: Synthesize, fit_score: FitScore,
                     budget_for: Callable[[int], int], progress: Callable[[str], None] = lambda s: None,
                     mix: str = "balanced") -> list[Trial]:
    """For each (k, seed): real-only vs real + m synthetic per user, at the same classifier optimiser budget.

    The budget (optimiser steps) is `budget_for(n_real + n_synthetic)` for both runs, so a gain cannot
    come from the augmented run simply taking more optimiser steps. `mix` says how the augmented set is made:
    "concat" = the k real and the synthetic as they are; "balanced" = the k real repeated (round(m / k) times,
    at least once) so that real and synthetic recordings are about equally frequent in the classifier's
    batches. The repeats are not new data: the classifier's random time shifts and flips vary them.
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    trials = []
    for k in k_values:
        for seed in seeds:
            t = run_trial(train_x, train_labels, train_paths, k, seed, m_per_user=m_per_user,
                          make_generator=make_generator, synthesize=synthesize, fit_score=fit_score,
                          budget_for=budget_for, mix=mix)
            progress(trial_line(t))
            trials.append(t)
    return trials


def summarize_trials(trials: Sequence[Trial]) -> dict[str, dict[str, Any]]:
    """Mean ± std over seeds of real-only accuracy, augmented accuracy and gain, per k; the gain (a paired
    difference: augmented - real-only on the same k selection and seed) also gets a 95% Student-t interval."""
    out: dict[str, dict[str, Any]] = {}
    for k in dict.fromkeys(t.k for t in trials):
        ts = [t for t in trials if t.k == k]
        out[k] = dict(acc_real=mean_std([t.acc_real for t in ts]),
                      acc_augmented=mean_std([t.acc_augmented for t in ts]),
                      gain=mean_std([t.gain for t in ts]), gain_ci95=t_interval([t.gain for t in ts]),
                      seeds=[t.seed for t in ts], n_real=ts[0].n_real, n_synthetic=ts[0].n_synthetic,
                      generator=ts[0].generator)
    return out


# ---- the evaluator's section: trials and the protocol statement --------------------------------------------
def fewshot_steps_for(ctx: Any, pop: Any) -> int | None:
    """Sampler steps of the few-shot generators (None: the evaluator's). Only DPM-Solver++ was measured at 10
    steps; DDPM, DDIM and the vq-diffusion route's VQ steps keep the evaluator's, as does a smaller
    --steps."""
    n = ctx.st.fewshot_sample_steps
    if pop is None or not n or pop.route == "vq-diffusion" or ctx.sampler != "dpmsolver++":
        return None
    return min(n, ctx.steps)


def fewshot_sampler(ctx: Any, pop: Any) -> str:
    return f"{fewshot_steps_for(ctx, pop) or ctx.steps} {ctx.sampler} steps"
