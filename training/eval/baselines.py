"""`dopplergen evaluate --baselines`: the alternatives a radar engineer would pick instead of our generator,
on the few-shot protocol of the augmentation section (training/eval/augmentation.py, trials.py).

Per (k, seed): the same k recordings per person (select_k_per_user), the same classifier, seed and optimiser
budget (SectionTrials.budget_for / fit_score, budget for k real + m synthetic per person), the same balanced
mix and the same real test split. Real only (a) is trained once per (k, seed); every arm adds m recordings per
person to the same k:
- (b) classic augmentation of the k (training/eval/classic_aug.py), each transform alone and all combined,
  strengths tuned once on the simulated population, never on the targets;
- (c) an ACGAN (training/eval/acgan.py) pretrained on the population, then fine-tuned on population + the
  targets' k; raw, and with kinematic sifting (training/eval/filters.py physics filter, references = the
  classifier's own k; rejection rate recorded; a sieve that rejects every candidate is an error);
- (d) ours (SectionTrials: population pipeline + k-shot user rows) and ours + (b) (ours' samples through the
  combined classic transforms). Needs `--fewshot`'s population pipeline.
No generator sees a target recording beyond the classifier's k; each trial records which it saw.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset_folder import spectrogram_axes
from models.normalization import Normalization
from training.eval import acgan, classic_aug
from training.eval.augmentation import k_label, select_k_per_user
from training.eval.context import fixed_conditions
from training.eval.filters import FilterConfig, filter_candidates, readouts
from training.eval.metrics import mean_std
from training.eval.stats import paired_difference, t_interval
from training.eval.trials import SectionTrials, plan_workers, run_trials

CLASSIC_ARMS = tuple(f"classic:{t}" for t in (*classic_aug.TRANSFORMS, "all"))
GAN_ARMS = ("acgan", "acgan+sift")
OURS_ARMS = ("ours", "ours+classic")


class SiftError(ValueError):
    """Kinematic sifting kept no candidate at all."""


@dataclass(frozen=True)
class BaselineConfig:
    gan: acgan.GanConfig = field(default_factory=acgan.GanConfig)
    sift_z: float = 3.0  # kinematic sieve: largest robust z-score of a read-out (filters.FilterConfig.z_max)
    sift_factor: float = 3.0  # ACGAN candidates per kept sample for the sieve
    grid: dict[str, tuple[float, ...]] | None = None  # classic strengths to tune (None: classic_aug.GRID)
    tune_k: int = 5  # population recordings per person the tuning classifier sees
    tune_seeds: tuple[int, ...] = (0,)
    classic_alone: bool = True  # each classic transform alone, besides all of them


# --quick: a smoke test of the machinery. Its barely trained ACGAN makes no physically plausible candidate, so
# its sieve admits every candidate (z_max = inf); the sieve itself is tested on real recordings.
QUICK_BASELINES = BaselineConfig(
    gan=acgan.GanConfig(width=4, batch_size=8, pretrain_steps=4, finetune_steps=2), sift_z=math.inf,
    grid={"noise": (1.0, 3.0)}, tune_k=3)


@dataclass
class PopData:
    x: np.ndarray  # (N, C, H, W) dB, every split
    y: np.ndarray
    splits: np.ndarray
    users: list[str]
    info: dict[str, Any]


def population_data(ctx: Any, pop_path: str | None, population_seed: int) -> PopData:
    """The simulated population's recordings: the population pipeline's training data, else <out>/population/
    data, else simulated there with the population recipe (training/eval/population.py). Refused when it
    shares a person (simulate profile seed) or its fingerprint with the evaluated data."""
    from models.dataset_folder import manifest_path
    from training.data.dataset import load_dataset
    from training.eval.population import covers_conditions, population_commands, run_commands

    path = None
    if pop_path and (Path(pop_path) / "dopplergen.json").is_file():
        path = (json.loads((Path(pop_path) / "dopplergen.json").read_text()).get("dataset") or {}).get("path")
        path = path if path and manifest_path(Path(path)).is_file() else None
    if path is None:
        path = str(ctx.out / "population" / "data")
        if not manifest_path(Path(path)).is_file():
            if (ctx.data.meta.get("simulate") or {}).get("seed") == population_seed:
                raise SystemExit(f"--population-seed {population_seed} is the evaluated dataset's own seed")
            cmd = population_commands(
                ctx.out / "population", preset="demo", size=ctx.pipe.image_size[0],
                carrier_ghz=float(ctx.data.meta.get("carrier_hz", 24e9)) / 1e9, seed=population_seed,
                quick=ctx.st.quick, cover_conditions=covers_conditions(ctx.data.meta))[0]
            run_commands([cmd], ctx.log, ctx.threads)
    ds = load_dataset(path, channels=ctx.pipe.channels, size=tuple(ctx.pipe.image_size))
    keep = np.ones(len(ds.labels), bool)
    fixed = fixed_conditions(ctx.pipe, ctx.data.meta)  # walking targets: the population's walks only
    if fixed and "activity" in ds.extra:
        keep = np.asarray(ds.extra["activity"]).astype(str) == fixed["activity"]
    seeds = {p["seed"] for p in (ds.meta.get("simulate") or {}).get("profiles", [])}
    shared = seeds & {p["seed"] for p in (ctx.data.meta.get("simulate") or {}).get("profiles", [])}
    if shared or ds.fingerprint == ctx.data.fingerprint:
        raise SystemExit(f"population data {path} shares people with the evaluated data (profile seeds "
                         f"{sorted(shared)[:5]}): the baselines need a disjoint population")
    info = dict(path=str(path), users=len(ds.users), recordings=int(keep.sum()), fingerprint=ds.fingerprint,
                **({"activity": fixed["activity"]} if not keep.all() else {}))
    return PopData(ds.x[keep].astype(np.float32), np.asarray(ds.labels, np.int64)[keep],
                   np.asarray(ds.splits)[keep], list(ds.users), info)


def tune_classic(sec: SectionTrials, pop: PopData, cfg: BaselineConfig, seed: int,
                 log: Any) -> dict[str, Any]:
    """classic_aug.tune on the population: k per person from its train split, scored on its test split."""
    tr = np.flatnonzero(pop.splits == "train")
    te = np.flatnonzero(pop.splits == "test")
    te = te if len(te) else np.flatnonzero(pop.splits != "train")
    idx = tr[select_k_per_user(pop.y[tr], cfg.tune_k, seed)]
    ctx = sec.ctx

    def score(x, y, s, n_total):
        steps = sec.budget_for(n_total)
        clf = ctx.fit(x, y, seed=s, num_classes=len(pop.users),
                      epochs=max(1, -(-steps // -(-len(x) // sec.batch))))
        from training.eval.classifier import accuracy

        return accuracy(clf, pop.x[te], pop.y[te])

    return classic_aug.tune(pop.x[idx], pop.y[idx], ctx.st.synth_per_user, score, ctx.data.dyn_range_db,
                            seeds=cfg.tune_seeds, grid=cfg.grid, log=log)


class BaselineTrials:
    """One (k, seed): real only once, then every arm at the same budget. Picklable for worker processes."""

    def __init__(self, sec: SectionTrials, pop: PopData, cfg: BaselineConfig,
                 classic: classic_aug.ClassicConfig, gan_state: dict[str, Any], arms: list[str],
                 examples_for: tuple[Any, int] | None):
        self.sec, self.ctx, self.cfg, self.classic, self.arms = sec, sec.ctx, cfg, classic, arms
        self.pop_x = Normalization(sec.ctx.data.dyn_range_db).to_model(pop.x)
        self.pop_y, self.n_pop = pop.y, len(pop.users)
        self.gan_state, self.examples_for = gan_state, examples_for

    def for_worker(self, threads: int) -> BaselineTrials:
        import copy

        w = copy.copy(self)
        w.sec = self.sec.for_worker(threads)
        w.ctx = w.sec.ctx
        return w

    def __call__(self, k: int, seed: int) -> tuple[dict[str, Any], None, list, list[str]]:
        d, st, sec = self.ctx.data, self.ctx.st, self.sec
        idx = select_k_per_user(d.train_y, k, seed)
        x_k, y_k = d.train_x[idx], np.asarray(d.train_y)[idx]
        n_syn = st.synth_per_user * len(d.users)
        budget = sec.budget_for(len(idx) + n_syn)
        reps = max(1, round(n_syn / len(idx))) if st.augment_mix == "balanced" else 1
        acc_real = sec.fit_score(x_k, y_k, seed, budget)
        self._cache: dict[str, Any] = {}
        arms, examples = {}, {}
        for arm in self.arms:
            t0 = time.perf_counter()
            x_s, y_s, info = self.make(arm, k, seed, x_k, y_k)
            # an arm reusing its sibling's generator (ACGAN + sifting, ours + classic) is charged for it too
            secs = time.perf_counter() - t0 + info.pop("shared_seconds", 0.0)
            if len(y_s) != n_syn:
                raise RuntimeError(f"{arm} made {len(y_s)} recordings, not {n_syn}: budgets would differ")
            acc = sec.fit_score(np.concatenate([x_k] * reps + [x_s]), np.concatenate([y_k] * reps + [y_s]),
                                seed, budget)
            arms[arm] = dict(acc=acc, gain=acc - acc_real, seconds=secs, **info)
            if (k, seed) == self.examples_for:
                examples[arm] = np.concatenate([x_s[y_s == u][:3] for u in range(min(2, len(d.users)))])
        rec = dict(k=k_label(k), seed=seed, n_real=int(len(idx)), n_synthetic=n_syn, acc_real=acc_real,
                   arms=arms, generator_saw=[str(d.train_paths[i]) for i in idx], examples=examples)
        line = f"baselines k={k} seed={seed}: real {acc_real:.3f} | " + ", ".join(
            f"{a} {v['gain']:+.3f}" for a, v in arms.items())
        return rec, None, [], [line]

    def make(self, arm: str, k: int, seed: int, x_k: np.ndarray, y_k: np.ndarray):
        m, dyn = self.ctx.st.synth_per_user, self.ctx.data.dyn_range_db
        if arm.startswith("classic:"):
            x, y = classic_aug.augment(x_k, y_k, m, self.classic.only(arm.split(":")[1]), seed, dyn)
            return x, y, {}
        if arm in GAN_ARMS:
            return self.gan_arm(arm, k, seed, x_k, y_k)
        shared = {"shared_seconds": self._cache["ours"][2]} if "ours" in self._cache else {}
        if "ours" not in self._cache:
            t0 = time.perf_counter()
            handle, _ = self.sec.make_generator(k, seed, x_k, y_k)
            x, y = self.sec.synthesize(handle, m, seed)
            # ("made", key, seconds): the few-shot trial's own samples of this (k, seed)
            # (training/eval/ood.py), charged the seconds they took there
            shared = {"shared_seconds": handle[2]} if handle[0] == "made" else {}
            self._cache["ours"] = (x, y, time.perf_counter() - t0 + shared.get("shared_seconds", 0.0))
        x, y, _ = self._cache["ours"]
        if arm == "ours":
            return x, y, shared
        x2, y2 = classic_aug.augment(x, y, m, self.classic.only("all"), seed, dyn)
        return x2, y2, shared

    def gan_arm(self, arm, k, seed, x_k, y_k):
        d, m = self.ctx.data, self.ctx.st.synth_per_user
        norm, n_users = Normalization(d.dyn_range_db), len(d.users)
        shared = {"shared_seconds": self._cache["gan"][3]} if "gan" in self._cache else {}
        if "gan" not in self._cache:  # fine-tune once per trial; both arms share its candidates
            t0 = time.perf_counter()
            gan = acgan.build(self.n_pop + n_users, d.train_x.shape[-2:], d.train_x.shape[1], self.cfg.gan,
                              self.gan_state)
            acgan.init_classes_at_mean(gan, self.n_pop + np.arange(n_users), np.arange(self.n_pop))
            log = acgan.train(gan, np.concatenate([self.pop_x, norm.to_model(x_k)]),
                              np.concatenate([self.pop_y, self.n_pop + y_k]), self.cfg.gan.finetune_steps,
                              self.cfg.gan, seed=seed * 1000 + k)
            n = int(np.ceil(m * self.cfg.sift_factor))
            y = np.repeat(np.arange(n_users), n)
            x = norm.to_db(acgan.sample(gan, self.n_pop + y, seed=seed * 1000 + k + 7))
            self._cache["gan"] = (x, y, log["seconds"], time.perf_counter() - t0)
        x, y, ft_s, _ = self._cache["gan"]
        if arm == "acgan":
            keep = np.concatenate([np.flatnonzero(y == u)[:m] for u in range(n_users)])
            return x[keep], y[keep], dict(finetune_seconds=ft_s, **shared)
        idx, info = sift(x, y, x_k, y_k, m, n_users, d.meta, self.cfg)
        return x[idx], y[idx], dict(finetune_seconds=ft_s, **info, **shared)


def sift(x_db: np.ndarray, y: np.ndarray, x_k: np.ndarray, y_k: np.ndarray, m: int, n_users: int,
         meta: dict[str, Any], cfg: BaselineConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Kinematic sifting of candidates (x_db, y): the physics filter with the classifier's own k recordings as
    references, m kept per person (topped up by z when too few pass). Indices kept and the rejection rate;
    SiftError when no candidate passes at all."""
    fcfg = FilterConfig(filters=("physics",), factor=cfg.sift_factor, z_max=cfg.sift_z, fill=True)
    sel = filter_candidates(x_db, y, m, n_users, fcfg, meta=meta, ref_readouts=readouts(x_k, meta), ref_y=y_k,
                            ref_source="the classifier's own k real recordings")
    if sel.report["passed_hard_filters"] == 0:
        raise SiftError(f"kinematic sifting rejected all {len(y)} candidates (z_max = {cfg.sift_z:g}): the "
                        "threshold admits nothing; raise it")
    return sel.index, dict(rejection_rate=sel.report["per_filter"]["physics"]["rate"],
                           topped_up=sel.report["topped_up"], candidates=sel.report["candidates"])


def summarize(records: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Per k: each arm's accuracy and paired gain over real only (95% t-interval); the best alternative (real
    only included, gain 0) by mean gain; ours (and ours + classic) minus it, paired per seed."""
    out = {}
    for k in dict.fromkeys(r["k"] for r in records):
        rs = [r for r in records if r["k"] == k]
        real = [r["acc_real"] for r in rs]
        rows = {"real": dict(acc=mean_std(real), gain_ci95=t_interval([0.0] * len(rs)))}
        for a in arms:
            accs, gains = [r["arms"][a]["acc"] for r in rs], [r["arms"][a]["gain"] for r in rs]
            rows[a] = dict(acc=mean_std(accs), gain_ci95=t_interval(gains),
                           seconds=float(np.mean([r["arms"][a]["seconds"] for r in rs])))
            rej = [r["arms"][a]["rejection_rate"] for r in rs if "rejection_rate" in r["arms"][a]]
            if rej:
                rows[a]["rejection_rate"] = float(np.mean(rej))
        alts = ["real"] + [a for a in arms if a not in OURS_ARMS]
        best = max(alts, key=lambda a: rows[a]["gain_ci95"]["mean"] if a != "real" else 0.0)
        best_acc = real if best == "real" else [r["arms"][best]["acc"] for r in rs]
        versus = {a: paired_difference([r["arms"][a]["acc"] for r in rs], best_acc) for a in arms
                  if a in OURS_ARMS}
        out[k] = dict(rows=rows, best_alternative=best, versus_best=versus, seeds=[r["seed"] for r in rs],
                      n_real=rs[0]["n_real"], n_synthetic=rs[0]["n_synthetic"])
    return out


def baselines_section(ctx: Any, pool: Any, aug: dict[str, Any] | None, *, population_seed: int = 1,
                      workers: int = 1, cfg: BaselineConfig | None = None,
                      classic: classic_aug.ClassicConfig | None = None,
                      sec: SectionTrials | None = None, ours: str = "") -> dict[str, Any]:
    """The "Versus the alternatives" section: every arm at each small k of the settings and each seed.
    `classic`: strengths tuned before (on the population), instead of tuning them here. `sec`: the trials
    whose generator is "ours" (default: the augmentation section's, the population pipeline + k-shot rows),
    and `ours` how the protocol text names it."""
    from training.eval import baselines_report

    st, d = ctx.st, ctx.data
    cfg = cfg or (QUICK_BASELINES if st.quick else BaselineConfig())
    k_values = [k for k in st.k_values if k is not None]
    pop_path = ((aug or {}).get("population") or {}).get("path")
    pop = population_data(ctx, pop_path, population_seed)
    fcfg = FilterConfig(filters=st.filters, factor=st.filter_factor, tau=st.filter_tau, fill=True)
    sec = sec or SectionTrials(ctx, pool, None, pop_path, fcfg)
    t0 = time.perf_counter()
    tuning = (tune_classic(sec, pop, cfg, ctx.seed, ctx.log) if classic is None
              else dict(config=asdict(classic), scores=[], tuned=classic))
    tune_s = time.perf_counter() - t0
    classic = tuning.pop("tuned")
    gan = acgan.build(len(pop.users) + len(d.users), d.train_x.shape[-2:], d.train_x.shape[1], cfg.gan)
    gan_log = acgan.train(gan, Normalization(d.dyn_range_db).to_model(pop.x), pop.y, cfg.gan.pretrain_steps,
                          cfg.gan, seed=ctx.seed)
    ctx.log(f"baselines: classic strengths tuned on the population in {tune_s:.0f} s ({classic.describe()}); "
            f"ACGAN pretrained {cfg.gan.pretrain_steps} steps in {gan_log['seconds']:.0f} s")
    axes = spectrogram_axes(d.meta)  # kinematic sifting reads speeds off the time and Doppler axes
    has_axes = axes["doppler_hz_row0"] is not None and axes["seconds_per_frame"] is not None
    skipped = {} if has_axes else {
        "acgan+sift": "the data's meta.json has no time and Doppler axes, which the kinematic read-outs need"}
    for arm, why in skipped.items():
        ctx.log(f"baselines: {arm} skipped: {why}")
    arms = ([a for a in CLASSIC_ARMS if cfg.classic_alone or a == "classic:all"]
            + [a for a in GAN_ARMS if a not in skipped] + (list(OURS_ARMS) if pop_path else []))
    jobs = [(k, seed) for k in k_values for seed in st.seeds]
    runner = BaselineTrials(sec, pop, cfg, classic, gan.state(), arms, jobs[0] if jobs else None)
    n_proc, n_threads = plan_workers(workers, len(jobs), ctx.threads)
    records = [r[0] for r in run_trials(runner, jobs, workers, ctx.log)]
    test_set = set(d.test_paths)
    if any(test_set & set(r["generator_saw"]) for r in records):
        raise RuntimeError("protocol violation: a baseline generator saw test recordings")
    examples = next((r.pop("examples") for r in records if r.get("examples")), {})
    for r in records:
        r.pop("examples", None)
    pop_meta = json.loads((Path(pop_path) / "dopplergen.json").read_text()) if pop_path else {}
    res = dict(arms=arms, trials=records, summary=summarize(records, arms), population=pop.info,
               classic=dict(config=tuning["config"], described=classic.describe(), tuning=tuning["scores"],
                            seconds=tune_s, tune_k=cfg.tune_k),
               gan=dict(config=asdict(cfg.gan), pretrain=gan_log, sift_z=cfg.sift_z,
                        sift_factor=cfg.sift_factor),
               ours=dict(measured=bool(pop_path), population_pipeline=pop_path, how=ours,
                         population_train_s=((pop_meta.get("training") or {}).get("final") or {}).get(
                             "elapsed_s")),
               workers=dict(processes=n_proc, threads_each=n_threads), skipped=skipped)
    res["protocol"] = baselines_report.protocol(res, st)
    baselines_report.figures(res, examples, ctx.data, d.test_x, d.test_y, ctx.out / "figures")
    return res
