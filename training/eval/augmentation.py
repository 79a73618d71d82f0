"""The augmentation-gain protocol: k-per-user selections, few-shot generators, real vs real+synthetic runs.

Rule: no real recording of a target user beyond the classifier's own k ever reaches the generator.
- k = all: the generator is the pipeline under evaluation, trained on the full train split (which is
  exactly the classifier's real data), never on the test split.
- small k: a generator pretrained on a *disjoint* simulated population is adapted to each target user
  from exactly the classifier's k recordings, by learning only new user-encoder rows with the diffusion
  loss while the UNet and VAE stay frozen (textual inversion; Gal et al., ICLR 2023): training/enrol.py, on a
  population from training/eval/population.py.
Each trial records what its generator saw, so the report (and the tests) can check the rule.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from training.enrol import FewShotConfig, adapt_new_users
from training.eval.classifier import accuracy, train_classifier
from training.eval.filters import FilterConfig, filter_candidates, readouts, summary_line
from training.eval.metrics import mean_std
from training.eval.population import population_pipeline
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


# ---- the augmentation-gain experiment ---------------------------------------------------------------------------
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
# fit_score(x_db, labels, seed, budget) -> test accuracy of a classifier trained on `budget` sample presentations
# (epochs = budget / len(x)), so runs on different amounts of data get the same optimisation budget.
FitScore = Callable[[np.ndarray, np.ndarray, int, int], float]


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
            idx = select_k_per_user(train_labels, k, seed)
            x_k, y_k = train_x[idx], np.asarray(train_labels)[idx]
            handle, desc = make_generator(k, seed, x_k, y_k)  # the generator sees x_k and nothing else
            x_syn, y_syn = synthesize(handle, m_per_user, seed)
            budget = budget_for(len(idx) + len(y_syn))
            acc_real = fit_score(x_k, y_k, seed, budget)
            reps = max(1, round(len(y_syn) / len(idx))) if mix == "balanced" else 1
            acc_aug = fit_score(np.concatenate([x_k] * reps + [x_syn]), np.concatenate([y_k] * reps + [y_syn]), seed,
                                budget)
            t = Trial(k=k_label(k), seed=seed, n_real=len(idx), n_synthetic=len(y_syn), acc_real=acc_real,
                      acc_augmented=acc_aug, generator=desc, generator_saw=[str(train_paths[i]) for i in idx])
            progress(f"k={t.k} seed={seed}: real {acc_real:.3f} -> augmented {acc_aug:.3f} ({t.gain:+.3f})")
            trials.append(t)
    return trials


def summarize_trials(trials: Sequence[Trial]) -> dict[str, dict[str, Any]]:
    """Mean ± std over seeds of real-only accuracy, augmented accuracy and gain, per k; the gain (a paired
    difference: augmented - real-only on the same k selection and seed) also gets a 95% Student-t interval."""
    out: dict[str, dict[str, Any]] = {}
    for k in dict.fromkeys(t.k for t in trials):
        ts = [t for t in trials if t.k == k]
        out[k] = dict(acc_real=mean_std([t.acc_real for t in ts]), acc_augmented=mean_std([t.acc_augmented for t in ts]),
                      gain=mean_std([t.gain for t in ts]), gain_ci95=t_interval([t.gain for t in ts]),
                      seeds=[t.seed for t in ts], n_real=ts[0].n_real, n_synthetic=ts[0].n_synthetic,
                      generator=ts[0].generator)
    return out


# ---- the evaluator's section: trials and the protocol statement ---------------------------------------------------
def fewshot_steps_for(ctx: Any, pop: Any) -> int | None:
    """Sampler steps of the few-shot generators (None: the evaluator's). Only DPM-Solver++ was measured at 10 steps;
    DDPM, DDIM and the vq-diffusion route's VQ steps keep the evaluator's, as does a smaller --steps."""
    n = ctx.st.fewshot_sample_steps
    if pop is None or not n or pop.route == "vq-diffusion" or ctx.scheduler != "dpmsolver++":
        return None
    return min(n, ctx.steps)


def fewshot_sampler(ctx: Any, pop: Any) -> str:
    return f"{fewshot_steps_for(ctx, pop) or ctx.steps} {ctx.scheduler} steps"


def augmentation_section(ctx: Any, pool: Any, *, fewshot: bool, population: str | None,
                         population_seed: int) -> dict[str, Any]:
    """Real-only vs real + synthetic test accuracy per k, under the protocol in this module's docstring."""
    st, d = ctx.st, ctx.data
    k_values = [k for k in st.k_values if k is None or fewshot]
    not_measured = [k_label(k) for k in st.k_values if k is not None and not fewshot]
    pop, pop_info = (None, None)
    if any(k is not None for k in k_values):
        pop, pop_info = population_pipeline(ctx, population, population_seed)
    defaults = inspect.signature(train_classifier).parameters
    epochs = st.classifier_epochs or int(defaults["epochs"].default)
    floor = st.classifier_min_steps or int(defaults["min_steps"].default)
    batch = int(defaults["batch_size"].default)
    logs: list[dict[str, Any]] = []
    fcfg = FilterConfig(filters=st.filters, factor=st.filter_factor, tau=st.filter_tau, fill=True)
    filter_logs: list[dict[str, Any]] = []

    def keep(x, y, m, seed, x_k, y_k):  # filters whose references are the classifier's own k real recordings only
        if not fcfg.filters:
            return x, y
        clf = ctx.fit(x_k, y_k, seed=seed) if fcfg.needs_classifier else None
        sel = filter_candidates(x, y, m, len(d.users), fcfg, meta=d.meta, clf=clf, ref_readouts=readouts(x_k, d.meta),
                                ref_y=y_k, ref_source="the classifier's own k real recordings")
        filter_logs.append(dict(seed=seed, n_real=int(len(y_k)), **{k: v for k, v in sel.report.items() if k != "per_user"}))
        ctx.log(f"seed {seed}, {len(y_k)} real: " + summary_line(sel.report))
        return x[sel.index], y[sel.index]

    def make_generator(k, seed, x_k, y_k):
        if k is None:
            return ("pool", None, x_k, y_k), "evaluated pipeline (full train split)"
        pipe_k, log = adapt_new_users(pop, x_k, y_k, d.users, FewShotConfig(steps=st.fewshot_steps, seed=seed))
        logs.append(dict(k=k, seed=seed, n_seen=int(len(y_k)), **log))
        return ("pipe", pipe_k, x_k, y_k), f"population + {k}-shot user rows"

    def synthesize(handle, m, seed):
        kind, pipe_k, x_k, y_k = handle
        n = fcfg.candidates(m)  # m, or factor x m candidates for the filters to choose from
        if kind == "pool":  # the k=all generator is the evaluated pipeline: draw from its pool
            rng = np.random.default_rng([seed, 0xA9])
            idx = np.concatenate([rng.choice(np.flatnonzero(pool.y == c), size=min(n, int((pool.y == c).sum())),
                                             replace=False) for c in range(len(d.users))])
            return keep(pool.x[idx], pool.y[idx], m, seed, x_k, y_k)
        y, seeds = ctx.plan(n, stream=100 + seed)
        p = ctx.sample(pipe_k, y, seeds, steps=fewshot_steps_for(ctx, pop), desc=f"few-shot synth seed {seed}")
        return keep(p.x, p.y, m, seed, x_k, y_k)

    def budget_for(n_total):  # optimiser steps of the augmented run, never below the CNN's own minimum
        return max(floor, epochs * -(-n_total // batch))

    def fit_score(x, y, seed, steps):
        clf = ctx.fit(x, y, seed=seed, epochs=max(1, -(-steps // -(-len(x) // batch))))
        return accuracy(clf, d.test_x, d.test_y)

    trials = run_augmentation(d.train_x, d.train_y, d.train_paths, k_values=k_values, seeds=st.seeds,
                              m_per_user=st.synth_per_user, make_generator=make_generator, synthesize=synthesize,
                              fit_score=fit_score, budget_for=budget_for, progress=ctx.log, mix=st.augment_mix)
    test_set = set(d.test_paths)
    leaks = [t for t in trials if test_set & set(t.generator_saw)]
    if leaks:
        raise RuntimeError("protocol violation: a generator saw test recordings")  # cannot happen; guarded anyway
    protocol = (
        f"Classifier = training.eval.classifier UserCNN, scored on the real test split ({len(d.test_y)} recordings). For each "
        f"k and seed {list(st.seeds)}: k real train recordings per user are drawn with the seed; the classifier is "
        f"trained on them alone, then on them plus m = {st.synth_per_user} synthetic recordings per user, with the same "
        "optimiser budget (steps) for both runs"
        + (" (mix `balanced`: the k real are repeated round(m / k) times, at least once, so real and synthetic are "
           "about equally frequent in the batches; the CNN's random time shifts and flips vary the repeats)"
           if st.augment_mix == "balanced" else " (mix `concat`: the k real and the synthetic as they are)")
        + ". k = all: the synthetic data comes from the evaluated pipeline, which "
        "was trained on the full train split = the classifier's own real data. Small k "
        + (f"(`--fewshot`): a population pipeline trained on a disjoint simulated population ({pop_info['users']} "
           f"users, profile seeds {pop_info['population_user_seeds'][:3]}..., none shared with the targets) is adapted "
           f"to the targets from exactly the classifier's k recordings per user by learning only new user-encoder rows "
           f"({st.fewshot_steps} Adam steps on the diffusion loss; UNet and VAE frozen; sampled with "
           f"{fewshot_sampler(ctx, pop)}"
           + ("; the population has a texture bank, so each generator gets one of the same k recordings' residuals"
              if pop is not None and pop.texture is not None else "")
           + "). No other recording of a target user reaches the generator; each trial records the recordings its "
           "generator saw."
           if pop_info else "is not measured without `--fewshot`: the evaluated pipeline saw every train recording, "
           "so using it at small k would leak data the classifier is not allowed.")
        + (f" Synthetic samples are filtered ({', '.join(fcfg.filters)}): {fcfg.factor:g} x m candidates per user, the m "
           "kept are those that pass, references = the classifier's own k real recordings (their kinematic read-outs; "
           f"a CNN trained on them, confidence >= {fcfg.tau:g}), topped up by score when too few pass."
           if fcfg.filters else "")
        + f" Gains are paired per seed (same k selection and classifier seed); intervals are 95% Student-t over the "
          f"{len(st.seeds)} seeds."
    )
    return dict(protocol=protocol, trials=[dict(asdict(t), gain=t.gain) for t in trials],
                summary=summarize_trials(trials), not_measured=not_measured, population=pop_info, fewshot_logs=logs,
                filter=dict(config=list(fcfg.filters), factor=fcfg.factor, tau=fcfg.tau, runs=filter_logs))
