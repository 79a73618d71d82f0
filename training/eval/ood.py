"""`dopplergen evaluate --fewshot --targets DATASET [--adapted P2]`: the few-shot protocol on another data
set's people, with the evaluated pipeline as the generator's starting point (and, with --adapted, the same
pipeline after `dopplergen adapt`, side by side on the same k selections and seeds).

For each (k, seed), k recordings of each target person come from the target set's train split (one session,
when the set is split by session), the pipeline learns their rows from those k only
(training/eval/fewshot.py), and an independent CNN trained on the k real alone is compared with one trained on
the k real + m synthetic, both scored on the target set's test split (other sessions). Each pipeline's domain
check (models/domain.py) on the k recordings is reported beside its gain."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from training.data.dataset import load_dataset
from training.eval.augmentation import summarize_trials
from training.eval.context import Context, Data, Log, Pool


def enrol_config(seed: int, steps: int | None = None) -> Any:
    """The targets are enrolled as `dopplergen enroll` and `POST /users` enrol a person (models/enrolment.py's
    defaults: nearest-row start, 60 steps), not at the in-domain protocol's settings: on an adapted pipeline
    the mean row would average two domains."""
    from models.enrolment import EnrolConfig
    from training.eval.fewshot import FewShotConfig

    cfg = {**asdict(EnrolConfig()), "seed": seed}
    return FewShotConfig(**(cfg if steps is None else {**cfg, "steps": steps}))


def target_data(path: str, pipe: Any) -> Data:
    """The target set's train and test splits at the pipeline's size; its people need not be the
    pipeline's."""
    ds = load_dataset(path, channels=pipe.channels, size=pipe.image_size)
    tr, te = ds.filter("train"), ds.filter("test")
    if not len(tr) or not len(te):
        raise SystemExit(f"{path}: the targets need a train and a test split (got {len(tr)} and {len(te)})")
    return Data(tr.x, tr.labels, tr.paths, te.x, te.labels, te.paths, ds.users, ds.meta, ds.fingerprint,
                tr.extra)


def run_pipeline(label: str, path: str, targets: str, st: Any, *, steps: int, guidance: float, sampler: str,
                 seed: int, device: str, out: Path, log: Log, threads: int | None,
                 estimate_folds: int = 0, baselines: bool = False,
                 population_seed: int = 1) -> dict[str, Any]:
    """The protocol's trials for one starting pipeline: summary per k, trials, domain check on the k.
    `baselines`: also "Versus the alternatives" (training/eval/baselines.py) on the same targets and k, with
    this pipeline + enrolment as ours and its training data as the alternatives' population."""
    from models import domain
    from models.pipeline import DopplerPipeline
    from training.eval.filters import FilterConfig
    from training.eval.trials import SectionTrials
    from training.eval.utility import loo_utility

    pipe = DopplerPipeline.load(path, device=device)
    data = target_data(targets, pipe)
    ctx = Context(pipe=pipe, data=data, st=st, steps=steps, guidance=guidance, sampler=sampler, seed=seed,
                  device=device, out=out, log=log, threads=threads)
    empty = Pool(np.zeros((0, pipe.channels, *pipe.image_size), np.float32), np.zeros(0, np.int64), [])
    runner = SectionTrials(ctx, empty, pipe, path, FilterConfig(filters=st.filters))
    check = domain.check(pipe, data.train_x)
    log(f"{label}: {path} on {targets}: {check.line()}")
    seen: dict[str, Any] = {}
    synth, fit = runner.synthesize, runner.fit_score
    # (k, seed) -> (x_k, x, y, seconds): the baselines' "ours" arm is this trial's generator; it takes these
    # samples (charged the seconds they took) instead of enrolling and sampling the same people again
    made: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray, float]] = {}
    fits: dict[tuple[Any, ...], float] = {}

    def make_generator(k, seed, x_k, y_k):  # keeps what the trial saw, for the utility estimate below
        from training.eval.fewshot import adapt_new_users

        if (k, seed) in made and np.array_equal(made[k, seed][0], x_k):
            return ("made", (k, seed), made[k, seed][3]), f"pipeline + {k}-shot rows (as dopplergen enroll)"
        seen.update(x_k=x_k, y_k=y_k, key=(k, seed), t0=time.perf_counter())
        pipe_k, _ = adapt_new_users(pipe, x_k, y_k, data.users,
                                    enrol_config(seed, st.fewshot_steps if st.quick else None),
                                    columns=data.k_columns(pipe, k, seed, x_k))
        return ("pipe", pipe_k, x_k, y_k), f"pipeline + {k}-shot rows (as dopplergen enroll)"

    def synthesize(handle, m, seed):
        if handle[0] == "made":
            return made[handle[1]][1:3]
        x, y = synth(handle, m, seed)
        made[seen["key"]] = (seen["x_k"], x, y, time.perf_counter() - seen["t0"])
        seen.update(x_syn=x, y_syn=y)
        return x, y

    def fit_score(x, y, seed, steps):  # the baselines' real-only and "ours" fits are the trial's: fitted once
        key = (seed, steps, hashlib.sha1(np.ascontiguousarray(x)).hexdigest(),
               hashlib.sha1(np.ascontiguousarray(y)).hexdigest())
        if key not in fits:
            fits[key] = fit(x, y, seed, steps)
        return fits[key]
    runner.make_generator, runner.synthesize, runner.fit_score = make_generator, synthesize, fit_score
    trials, estimates = [], []
    for k in [k for k in st.k_values if k is not None]:
        for s in st.seeds:
            t, _, _, lines = runner(k, s)
            for line in lines:
                log(f"{label}: {line}")
            trials.append(t)
            if estimate_folds:  # generate --check-with's estimate from the same k and samples alone
                ratio = st.synth_per_user / k
                est = loo_utility(seen["x_k"], seen["y_k"], seen["x_syn"], seen["y_syn"],
                                  dyn_range_db=data.dyn_range_db, ratios=(ratio,), seed=s,
                                  max_folds=estimate_folds, threads=threads)
                estimates.append(dict(k=str(k), seed=s, estimated_gain=est.gains[ratio]["mean"],
                                      measured_gain=t.gain))
                log(f"{label}: k={k} seed={s}: leave-one-out estimate {est.gains[ratio]['mean']:+.3f}, "
                    f"measured {t.gain:+.3f}")
    res = {"pipeline": path, "domain": check.to_dict(), "summary": summarize_trials(trials),
           "trials": [asdict(t) for t in trials], "utility_estimates": estimates}
    if baselines:
        from training.eval.baselines import baselines_section

        # in this process: the runner's generator is a closure over this run (worker processes pickle it)
        res["baselines"] = baselines_section(
            ctx, empty, {"population": {"path": path}}, population_seed=population_seed, workers=1,
            sec=runner, ours=f"`{path}` with each target enrolled from the k as `dopplergen enroll` does")
    return res


def ood_section(pipeline: str, adapted: str | None, targets: str, st: Any, *, baselines: bool = False,
                **kw: Any) -> dict[str, Any]:
    """Both runs (as given, adapted) and the paired difference of their gains per k; `baselines` on the
    first."""
    from training.eval.stats import t_interval

    first = run_pipeline("as given", pipeline, targets, st, baselines=baselines, **kw)
    res: dict[str, Any] = {"targets": targets, "runs": {"as given": first},
                           "settings": dict(seeds=list(st.seeds), synth_per_user=st.synth_per_user,
                                            init_strength=st.init_strength)}
    if adapted:
        res["runs"]["adapted"] = run_pipeline("adapted", adapted, targets, st, **kw)
        a, b = res["runs"]["as given"]["trials"], res["runs"]["adapted"]["trials"]
        res["adapted_minus_as_given"] = {
            k: t_interval([tb["acc_augmented"] - ta["acc_augmented"] for ta, tb in zip(a, b, strict=True)
                           if ta["k"] == k])
            for k in dict.fromkeys(t["k"] for t in a)}
    pairs = [(e["estimated_gain"], e["measured_gain"]) for r in res["runs"].values()
             for e in r["utility_estimates"]]
    if len(pairs) >= 3:
        est, meas = np.array(pairs).T
        res["estimate_vs_measured"] = dict(
            n=len(pairs), pearson_r=float(np.corrcoef(est, meas)[0, 1]) if est.std() and meas.std() else None,
            sign_agreement=float(np.mean(np.sign(est) == np.sign(meas))),
            mean_abs_error=float(np.mean(np.abs(est - meas))))
    return res


def markdown(res: dict[str, Any], figures: str = "figures",
             title: str = "Few-shot on people the pipeline never saw") -> str:
    """The few-shot section on another set's people (in or out of the pipeline's domain: its domain check
    says which); `figures`: the figure folder relative to the Markdown file."""
    strength = (res.get("settings") or {}).get("init_strength", 1.0)
    lines = [f"## {title}: `{res['targets']}`", "",
             *([f"Each synthetic sample starts from one of its person's k recordings, noised to {strength:g} "
                "of the sampling schedule (`--init-strength`, SDEdit), instead of from pure noise.", ""]
               if strength < 1 else []),
             "| generator start | domain check | k | real only | real + synthetic | gain [95% CI] |",
             "|---|---|---|---|---|---|"]
    for label, r in res["runs"].items():
        d = r["domain"]
        check = f"{d['recon_error_db']:.2f} dB" + (f" ({d['ratio']:.2f}x own)" if d.get("ratio") else "")
        for k, s in r["summary"].items():
            ci = s["gain_ci95"]
            lines.append(f"| {label} (`{r['pipeline']}`) | {check} | {k} | "
                         f"{100 * s['acc_real']['mean']:.1f}% | {100 * s['acc_augmented']['mean']:.1f}% | "
                         f"{100 * s['gain']['mean']:+.1f} "
                         f"[{100 * ci['lo']:+.1f}, {100 * ci['hi']:+.1f}] |")
    verdict = []
    for label, r in res["runs"].items():
        for k, s in r["summary"].items():
            g, lo = 100 * s["gain"]["mean"], 100 * s["gain_ci95"]["lo"]
            ok = g >= 5 and lo > 0
            verdict.append(f"- {label}, k = {k}: gain {g:+.1f} points, lower bound {lo:+.1f}: "
                           + ("meets the +5 points / lower bound > 0 target." if ok else
                              f"misses the target (+5 points with a lower bound above 0) by "
                              f"{max(5 - g, 0):.1f} points of gain"
                              + (f" and {-lo:.1f} points of lower bound." if lo <= 0 else ".")))
    evm = res.get("estimate_vs_measured")
    if evm:
        r = "n/a" if evm["pearson_r"] is None else f"{evm['pearson_r']:.2f}"
        verdict.append(f"- `generate --check-with`'s leave-one-out estimate (from each trial's k real and "
                       f"its synthetic samples alone) against the gain measured on the test sessions, over "
                       f"{evm['n']} trials: Pearson r {r}, same sign {100 * evm['sign_agreement']:.0f}%, "
                       f"mean absolute error {100 * evm['mean_abs_error']:.1f} points.")
    extra = []
    for r in res["runs"].values():
        if r.get("baselines"):
            from training.eval import baselines_report

            extra += ["", *baselines_report.markdown(r["baselines"], figures)]
    return "\n".join(lines + [""] + verdict + extra) + "\n"
