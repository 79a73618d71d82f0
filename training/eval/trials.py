"""The evaluator's augmentation section: its (k, seed) trials with the few-shot and pool generators, run in
this process or side by side in spawned worker processes, and the protocol text of the report.

The protocol itself (k selection, the paired real-only vs augmented runs, the rule that a generator sees only
the classifier's k) lives in training/eval/augmentation.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from training.eval.augmentation import (
    MIXES,
    Trial,
    fewshot_sampler,
    fewshot_steps_for,
    k_label,
    run_trial,
    summarize_trials,
    trial_line,
)
from training.eval.classifier import accuracy, train_classifier
from training.eval.context import fixed_conditions
from training.eval.fewshot import FewShotConfig, adapt_new_users
from training.eval.filters import FilterConfig, filter_candidates, readouts, summary_line
from training.eval.population import population_pipeline


class SectionTrials:
    """The evaluator's (k, seed) trials with everything they need. Picklable (without the loaded pipelines,
    which a worker loads again from their folders), so worker processes can run trials side by side."""

    def __init__(self, ctx: Any, pool: Any, pop: Any, pop_path: str | None, fcfg: FilterConfig):
        defaults = inspect.signature(train_classifier).parameters
        st = ctx.st
        self.ctx, self.pop, self.pop_path, self.fcfg = ctx, pop, pop_path, fcfg
        self.pool_x, self.pool_y = pool.x, pool.y
        self.epochs = st.classifier_epochs or int(defaults["epochs"].default)
        self.floor = st.classifier_min_steps or int(defaults["min_steps"].default)
        self.batch = int(defaults["batch_size"].default)
        self.lines: list[str] = []
        self.fewshot_log: dict[str, Any] | None = None
        self.filter_logs: list[dict[str, Any]] = []

    def for_worker(self, threads: int) -> SectionTrials:
        """A copy to send to a worker process: no loaded pipelines, no log file, `threads` torch threads."""
        import copy
        from dataclasses import replace

        w = copy.copy(self)
        w.ctx = replace(self.ctx, pipe=None, log=print, cache={}, threads=threads, quiet=True)
        w.pop = None
        return w

    def population(self) -> Any:
        if self.pop is None and self.pop_path is not None:
            from models.pipeline import DopplerPipeline

            self.pop = DopplerPipeline.load(self.pop_path, device=self.ctx.device)
        return self.pop

    def __call__(
        self, k: int | None, seed: int
    ) -> tuple[Trial, dict[str, Any] | None, list[dict[str, Any]], list[str]]:
        """Run one trial: (trial, few-shot adaptation log, filter logs, log lines)."""
        self.lines, self.fewshot_log, self.filter_logs = [], None, []
        d, st = self.ctx.data, self.ctx.st
        t = run_trial(d.train_x, d.train_y, d.train_paths, k, seed, m_per_user=st.synth_per_user,
                      make_generator=self.make_generator, synthesize=self.synthesize,
                      fit_score=self.fit_score,
                      budget_for=self.budget_for, mix=st.augment_mix)
        return t, self.fewshot_log, self.filter_logs, self.lines + [trial_line(t)]

    # filters whose references are the classifier's own k real recordings only
    def keep(self, x, y, m, seed, x_k, y_k):
        fcfg, d = self.fcfg, self.ctx.data
        if not fcfg.filters:
            return x, y
        clf = self.ctx.fit(x_k, y_k, seed=seed) if fcfg.needs_classifier else None
        sel = filter_candidates(x, y, m, len(d.users), fcfg, meta=d.meta, clf=clf,
                                ref_readouts=readouts(x_k, d.meta), ref_y=y_k,
                                ref_source="the classifier's own k real recordings")
        self.filter_logs.append(dict(seed=seed, n_real=int(len(y_k)),
                                     **{k: v for k, v in sel.report.items() if k != "per_user"}))
        self.lines.append(f"seed {seed}, {len(y_k)} real: " + summary_line(sel.report))
        return x[sel.index], y[sel.index]

    def make_generator(self, k, seed, x_k, y_k):
        if k is None:
            return ("pool", None, x_k, y_k), "evaluated pipeline (full train split)"
        pipe_k, log = adapt_new_users(self.population(), x_k, y_k, self.ctx.data.users,
                                      FewShotConfig(steps=self.ctx.st.fewshot_steps, seed=seed),
                                      columns=self.ctx.data.k_columns(self.population(), k, seed, x_k))
        self.fewshot_log = dict(k=k, seed=seed, n_seen=int(len(y_k)), **log)
        return ("pipe", pipe_k, x_k, y_k), f"population + {k}-shot user rows"

    def synthesize(self, handle, m, seed):
        kind, pipe_k, x_k, y_k = handle
        n = self.fcfg.candidates(m)  # m, or factor x m candidates for the filters to choose from
        if kind == "pool":  # the k=all generator is the evaluated pipeline: draw from its pool
            rng = np.random.default_rng([seed, 0xA9])
            py = self.pool_y
            idx = np.concatenate([rng.choice(np.flatnonzero(py == c), size=min(n, int((py == c).sum())),
                                             replace=False) for c in range(len(self.ctx.data.users))])
            return self.keep(self.pool_x[idx], py[idx], m, seed, x_k, y_k)
        y, seeds = self.ctx.plan(n, stream=100 + seed)
        strength = self.ctx.st.init_strength  # < 1: each sample starts from one of its person's k (SDEdit)
        # the section's guidance, also where the data fixes a condition (composed with the pipeline's g_c)
        p = self.ctx.sample(pipe_k, y, seeds, steps=fewshot_steps_for(self.ctx, self.population()),
                            guidance=self.ctx.guidance, given=fixed_conditions(pipe_k, self.ctx.data.meta),
                            desc=f"few-shot synth seed {seed}", strength=strength,
                            init_db=starts(x_k, y_k, y) if strength < 1 else None)
        return self.keep(p.x, p.y, m, seed, x_k, y_k)

    def budget_for(self, n_total):  # optimiser steps of the augmented run, never below the CNN's own minimum
        return max(self.floor, self.epochs * -(-n_total // self.batch))

    def fit_score(self, x, y, seed, steps):
        d = self.ctx.data
        clf = self.ctx.fit(x, y, seed=seed, epochs=max(1, -(-steps // -(-len(x) // self.batch))))
        return accuracy(clf, d.test_x, d.test_y)


def starts(x_k: np.ndarray, y_k: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One of the k real recordings of each sample's person to start from, in turn: the j-th sample of a
    person starts from their (j mod k)-th recording."""
    own = {c: np.flatnonzero(y_k == c) for c in np.unique(y)}
    if any(not len(v) for v in own.values()):
        raise ValueError("a person to sample has none of the k recordings to start from")
    turn = np.zeros(int(max(own)) + 1, np.int64)
    out = []
    for c in y:
        out.append(own[c][turn[c] % len(own[c])])
        turn[c] += 1
    return x_k[np.asarray(out)]


_WORKER: SectionTrials | None = None


def _init_worker(runner: SectionTrials, threads: int) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = runner


def _run_in_worker(k: int | None, seed: int):
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(k, seed)


def default_workers(device: str, threads: int | None) -> int:
    """Worker processes for the trials: one per core (at most 8) on the CPU, where two 1-thread processes
    sample 1.28-1.39x faster than one 2-thread process (benchmarks/eval_workers.py); one on an accelerator."""
    import os

    if not str(device).startswith("cpu"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, threads or cores, cores))


def plan_workers(workers: int, n_jobs: int, threads: int | None) -> tuple[int, int | None]:
    """(processes, torch threads each) for n_jobs trials: 1 = this process with its own threads (None)."""
    workers = min(workers, n_jobs)
    if workers <= 1:
        return 1, None
    return workers, max(1, (threads or workers) // workers)


def run_trials(
    runner: SectionTrials, jobs: list[tuple[int | None, int]], workers: int, log: Callable[[str], None]
):
    """Every (k, seed) of `jobs`, in that order: in this process (workers <= 1) or in `workers` spawned
    processes of threads // workers torch threads each (results are logged as they finish)."""
    workers, threads = plan_workers(workers, len(jobs), runner.ctx.threads)
    if threads is None:
        out = []
        for k, seed in jobs:
            out.append(runner(k, seed))
            for line in out[-1][3]:
                log(line)
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    log(f"augmentation: {len(jobs)} trials in {workers} worker processes, {threads} torch thread(s) each")
    results: dict[int, Any] = {}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(runner.for_worker(threads), threads)) as ex:
        futures = {ex.submit(_run_in_worker, k, seed): i for i, (k, seed) in enumerate(jobs)}
        try:
            for f in as_completed(futures):
                results[futures[f]] = f.result()
                for line in results[futures[f]][3]:
                    log(line)
        except BaseException:  # a failed trial (or Ctrl-C) stops the run: do not wait for the queued ones
            ex.shutdown(wait=False, cancel_futures=True)
            raise
    return [results[i] for i in range(len(jobs))]


def augmentation_section(ctx: Any, pool: Any, *, fewshot: bool, population: str | None,
                         population_seed: int, workers: int = 1) -> dict[str, Any]:
    """Real-only vs real + synthetic test accuracy per k, under the protocol in this module's docstring."""
    st, d = ctx.st, ctx.data
    k_values = [k for k in st.k_values if k is None or fewshot]
    not_measured = [k_label(k) for k in st.k_values if k is not None and not fewshot]
    pop, pop_info = (None, None)
    if any(k is not None for k in k_values):
        pop, pop_info = population_pipeline(ctx, population, population_seed)
    if st.augment_mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {st.augment_mix!r}")
    fcfg = FilterConfig(filters=st.filters, factor=st.filter_factor, tau=st.filter_tau, fill=True)
    runner = SectionTrials(ctx, pool, pop, pop_info["path"] if pop_info else None, fcfg)
    jobs = [(k, seed) for k in k_values for seed in st.seeds]
    n_proc, n_threads = plan_workers(workers, len(jobs), ctx.threads)
    results = run_trials(runner, jobs, workers, ctx.log)
    trials = [r[0] for r in results]
    logs = [r[1] for r in results if r[1] is not None]
    filter_logs = [f for r in results for f in r[2]]
    test_set = set(d.test_paths)
    leaks = [t for t in trials if test_set & set(t.generator_saw)]
    if leaks:
        # cannot happen; guarded anyway
        raise RuntimeError("protocol violation: a generator saw test recordings")
    protocol = (
        f"Classifier = training.eval.classifier UserCNN, scored on the real test split ({len(d.test_y)} "
        f"recordings). For each k and seed {list(st.seeds)}: k real train recordings per user are drawn with "
        f"the seed; the classifier is trained on them alone, then on them plus m = {st.synth_per_user} "
        "synthetic recordings per user, with the same optimiser budget (steps) for both runs"
        + (" (mix `balanced`: the k real are repeated round(m / k) times, at least once, so real and "
           "synthetic are about equally frequent in the batches; the CNN's random time shifts and flips vary "
           "the repeats)"
           if st.augment_mix == "balanced" else " (mix `concat`: the k real and the synthetic as they are)")
        + ". k = all: the synthetic data comes from the evaluated pipeline, which was trained on the full "
          "train split = the classifier's own real data. Small k "
        + ("(`--fewshot`): a population pipeline trained on a disjoint simulated population "
           f"({pop_info['users']} users, profile seeds {pop_info['population_user_seeds'][:3]}..., none "
           "shared with the targets) is adapted to the targets from exactly the classifier's k recordings "
           f"per user by learning only new user-encoder rows ({st.fewshot_steps} Adam steps on the diffusion "
           f"loss; UNet and VAE frozen; sampled with {fewshot_sampler(ctx, pop)}"
           + ("; the population has a texture bank, so each generator gets one of the same k recordings' "
              "residuals"
              if pop is not None and pop.texture is not None else "")
           + "). No other recording of a target user reaches the generator; each trial records the "
             "recordings its generator saw."
           if pop_info
           else "is not measured without `--fewshot`: the evaluated pipeline saw every train recording, "
                "so using it at small k would leak data the classifier is not allowed.")
        + (f" Synthetic samples are filtered ({', '.join(fcfg.filters)}): {fcfg.factor:g} x m candidates per "
           "user, the m kept are those that pass, references = the classifier's own k real recordings "
           f"(their kinematic read-outs; a CNN trained on them, confidence >= {fcfg.tau:g}), topped up by "
           "score when too few pass."
           if fcfg.filters else "")
        + " Gains are paired per seed (same k selection and classifier seed); intervals are 95% Student-t "
          f"over the {len(st.seeds)} seeds."
        + (f" The trials ran in {n_proc} worker processes of {n_threads} torch thread(s) each: the same "
           "draws, but float rounding differs from a run in one process, so accuracies can differ in the "
           "last digits."
           if n_threads is not None else "")
    )
    return dict(protocol=protocol, trials=[dict(asdict(t), gain=t.gain) for t in trials],
                summary=summarize_trials(trials), not_measured=not_measured, population=pop_info,
                fewshot_logs=logs,
                workers=dict(processes=n_proc, threads_each=n_threads),
                filter=dict(config=list(fcfg.filters), factor=fcfg.factor, tau=fcfg.tau, runs=filter_logs))
