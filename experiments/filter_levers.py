"""Measure the synthetic-data filters (issue 17) at small k on the same seeds: unfiltered vs each filter alone
vs combinations, and the synthetic-to-real ratio. Results and their reading: docs/evaluation.md, "Round 3
levers".

For each seed: k real train recordings per user (training.eval.augmentation.select_k_per_user), the real-only
CNN trained on them (which is also the filters' reference classifier and whose k recordings give the physics
reference: no other real recording is used by a filter), then for each variant m synthetic per user picked by
training.eval.filters from factor x m candidates, and a CNN trained on real + synthetic (the evaluator's
balanced mix and optimiser budget). Gains are paired per seed; intervals are Student-t over the seeds
(training.eval.stats).

Two generator settings:
- `--pipeline` as is: the candidates come from one pool sampled once per user and re-ordered per seed. The
  demo checkpoint saw every train recording of these users, so this measures the filters on a generator that
  knows the people, not the protocol's few-shot gain.
- `--population-pipeline P` (the protocol's setting): per seed, P is adapted to that seed's k real recordings
  exactly as `evaluate --fewshot` does, and the seed's candidates are drawn from it with the evaluator's
  seeds, so the unfiltered row at the evaluator's m reproduces `evaluate --fewshot`'s k-shot trial. `--adapt
  SPEC ...` adds rows for other adaptation or sampler settings (FewShotConfig fields, plus `guidance` and
  `sample_steps`), each unfiltered at m, on the same seeds. Without `--variants` and `--ratios` only those
  rows run.

Measured (docs/evaluation.md, "Round 3 levers"; demo checkpoint, k = 5, m = 10, seeds 0-4): no filter raises
the gain (confidence lowers it by 7 points, CI excluding 0); 5 synthetic per real beats 2 per real by 4
points. With `--population-pipeline runs/population-c/pipeline` (docs/evaluation.md, "Levers on the few-shot
generators"; k = 5, m = 30, seeds 0-4): no filter helps (confidence -4.9), fewer than 5 synthetic per real
loses 6 to 7 points, guidance 4 loses 3.5; 50 adaptation steps, 10 sampler steps and the enrolment's settings
change it by < 1 point.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python experiments/filter_levers.py --pipeline checkpoints/demo \
        --data data/sim10 --k 5 --seeds 5 --m 20 --out runs/levers/levers.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

# run as a script (python experiments/filter_levers.py): the repository root on the path
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ["none", "physics", "confidence", "diversity", "physics,confidence", "physics,diversity",
            "confidence,diversity", "physics,confidence,diversity"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim10")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--m", type=int, default=20, help="synthetic per user for the filter variants")
    p.add_argument("--factor", type=float, default=3.0)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--z-max", type=float, default=3.0)
    p.add_argument("--pool-per-user", type=int, default=120)
    p.add_argument("--variants", nargs="*", default=VARIANTS)
    p.add_argument("--ratios", type=float, nargs="*", default=[0.5, 1, 2, 5],
                   help="synthetic : real, unfiltered")
    p.add_argument("--ratio-filter", default="none", help="filter used for the ratio rows")
    p.add_argument("--population-pipeline", default=None,
                   help="the protocol's few-shot setting: per seed, adapt this "
                        "population pipeline to the seed's k real recordings (as "
                        "`evaluate --fewshot`) and draw that seed's candidates from it")
    p.add_argument("--adapt", nargs="*", default=[],
                   help="with --population-pipeline: other adaptation settings, each a FewShotConfig "
                        "override such as steps=300 or reg=0.1,init=nearest; each adapts its own generator "
                        "and adds an unfiltered row at --m")
    p.add_argument("--fewshot-steps", type=int, default=None,
                   help="adaptation steps of the default row "
                        "(default: the evaluator's, now 50; 150 before 2026-12-01)")
    p.add_argument("--fewshot-sample-steps", type=int, default=None,
                   help="sampler steps of the default row "
                        "(default: the evaluator's, now 10; 0 = the pipeline's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/levers/levers.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from experiments import common
    from experiments.common import open_run
    from models.pipeline import DopplerPipeline
    from models.sampling import resolve
    from training.eval import filters as F
    from training.eval.augmentation import fewshot_steps_for, select_k_per_user
    from training.eval.classifier import accuracy
    from training.eval.fewshot import FewShotConfig, adapt_new_users
    from training.eval.stats import format_ci, paired_difference, t_interval

    pipe, d, ctx, log, out = open_run(a.pipeline, a.data, a.out, a.threads)
    U = len(d.users)
    pop = DopplerPipeline.load(a.population_pipeline, device="cpu") if a.population_pipeline else None
    if pop is not None:  # the evaluator samples few-shot generators at the population's defaults
        chosen = resolve(pop)
        ctx.steps, ctx.guidance, ctx.sampler = chosen.steps, chosen.guidance, chosen.sampler
        if a.fewshot_sample_steps is not None:
            ctx.st = replace(ctx.st, fewshot_sample_steps=a.fewshot_sample_steps)
        # as the evaluator samples its few-shot generators
        ctx.steps = fewshot_steps_for(ctx, pop) or ctx.steps
    fewshot_steps = ctx.st.fewshot_steps if a.fewshot_steps is None else a.fewshot_steps

    def adapt_cfg(spec: str, seed: int):
        """FewShotConfig overrides from "key=value,..."; the keys `guidance` and `sample_steps` set the
        sampler."""
        kw, sampler = {}, {}
        for item in filter(None, spec.split(",")):
            key, val = item.split("=")
            if key in ("guidance", "sample_steps"):
                sampler[key] = float(val) if key == "guidance" else int(val)
                continue
            kw[key] = type(getattr(FewShotConfig, key))(val)
        return FewShotConfig(seed=seed, **{"steps": fewshot_steps, **kw}), sampler

    generators: dict = {}

    def adapted_pool(spec: str, seed: int, x_k, y_k, per_user: int):
        """A generator adapted to the seed's k recordings, and per_user samples per person from it (the
        evaluator's few-shot seeds: its unfiltered first m are exactly the evaluator's k-shot synthetic
        set)."""
        cfg, sampler = adapt_cfg(spec, seed)
        t0 = time.perf_counter()
        key = (seed, repr(cfg))
        if key not in generators:  # a sampler-only variant reuses the seed's generator
            for old in [old for old in generators if old[0] != seed]:
                del generators[old]
            generators[key] = adapt_new_users(pop, x_k, y_k, d.users, cfg)
        gen, glog = generators[key]
        t1 = time.perf_counter()
        y, seeds = ctx.plan(per_user, stream=100 + seed)
        p = ctx.sample(gen, y, seeds, guidance=sampler.get("guidance"), steps=sampler.get("sample_steps"),
                       desc=f"seed {seed} {spec or 'default'}")
        log(f"seed {seed} adaptation {spec or 'default'}: {t1 - t0:.0f} s (loss {glog['loss_first']:.3f} -> "
            f"{glog['loss_last']:.3f}); {len(y)} samples in {p.seconds:.0f} s")
        return p.x, p.y

    # ---- the candidate pool: sampled once, cached (a fixed generator only) ---------------------------------
    cache = out.parent / f"pool_{a.pool_per_user}.npz"
    if pop is not None:
        pool_x = pool_y = None
    elif cache.is_file():
        z = np.load(cache)
        pool_x, pool_y = z["x"], z["y"]
    else:
        y, seeds = ctx.plan(a.pool_per_user, stream=77)
        pool = ctx.sample(pipe, y, seeds, desc="pool")
        pool_x, pool_y = pool.x, pool.y
        np.savez(cache, x=pool_x, y=pool_y)
        log(f"pool: {len(pool_y)} samples ({ctx.steps} {ctx.sampler} steps, guidance {ctx.guidance}) in "
            f"{pool.seconds:.0f} s")
    full = ctx.fit(d.train_x, d.train_y, seed=0)  # diagnostic only: identity of the kept samples
    log(f"diagnostic CNN on the full train split: test {accuracy(full, d.test_x, d.test_y):.3f}"
        + (f"; pool identity {accuracy(full, pool_x, pool_y):.3f}" if pool_x is not None else ""))

    def fit_score(x, y, seed, n_total):
        return common.fit_score(ctx, x, y, seed, n_total)

    rows = []
    for seed in range(a.seeds):
        t0 = time.perf_counter()
        idx = select_k_per_user(d.train_y, a.k, seed)
        x_k, y_k = d.train_x[idx], d.train_y[idx]
        ref_r = F.readouts(x_k, d.meta)
        if pop is not None and not (a.variants or a.ratios):  # --adapt rows only (compare with another run's)
            pool_x = pool_y = None
            order = {}
        elif pop is not None:  # this seed's own few-shot generator; candidates in the evaluator's order
            pool_x, pool_y = adapted_pool("", seed, x_k, y_k, a.pool_per_user)
            order = {u: np.flatnonzero(pool_y == u) for u in range(U)}
        else:
            rng = np.random.default_rng([seed, 0xF1])
            order = {u: rng.permutation(np.flatnonzero(pool_y == u)) for u in range(U)}
        real_cache: dict[int, tuple] = {}

        def run(variant, m, kind, seed=seed, idx=idx, x_k=x_k, y_k=y_k, ref_r=ref_r, order=order,
                real_cache=real_cache, pool_x=pool_x, pool_y=pool_y):
            cfg = F.FilterConfig(filters=() if variant == "none" else variant, factor=a.factor, tau=a.tau,
                                 z_max=a.z_max, fill=True)
            n_c = cfg.candidates(m)
            cand = np.concatenate([order[u][:n_c] for u in range(U)])
            n_total = len(idx) + m * U
            # the real-only CNN at this budget: baseline and the filters' classifier
            if n_total not in real_cache:
                real_cache[n_total] = fit_score(x_k, y_k, seed, n_total)
            clf_real, acc_real = real_cache[n_total]
            sel = F.filter_candidates(pool_x[cand], pool_y[cand], m, U, cfg, meta=d.meta, clf=clf_real,
                                      ref_readouts=ref_r, ref_y=y_k,
                                      ref_source="the classifier's k real recordings")
            x_s, y_s = pool_x[cand][sel.index], pool_y[cand][sel.index]
            reps = max(1, round(len(y_s) / len(idx)))
            _, acc_aug = fit_score(np.concatenate([x_k] * reps + [x_s]), np.concatenate([y_k] * reps + [y_s]),
                                   seed, n_total)
            row = dict(kind=kind, seed=seed, variant=variant, m=m, ratio=m / a.k, acc_real=acc_real,
                       acc_augmented=acc_aug, gain=acc_aug - acc_real,
                       identity=float((full.predict(x_s) == y_s).mean()),
                       rejection_rate=sel.report["rejection_rate"],
                       per_filter={k: v["rate"] for k, v in sel.report["per_filter"].items()},
                       topped_up=sel.report["topped_up"])
            log(f"seed {seed} {kind} {variant:30s} m={m:3d}: real {acc_real:.3f} -> {acc_aug:.3f} "
                f"({row['gain']:+.3f}) identity {row['identity']:.2f} | {F.summary_line(sel.report)}")
            rows.append(row)

        for v in a.variants:
            run(v, a.m, "filter")
        for r in a.ratios:
            run(a.ratio_filter, max(1, int(r * a.k + 0.5)), "ratio")
        for spec in a.adapt if pop is not None else []:
            ax, ay = adapted_pool(spec, seed, x_k, y_k, a.m)
            run("none", a.m, "adapt:" + spec, pool_x=ax, pool_y=ay,
                order={u: np.flatnonzero(ay == u) for u in range(U)})
        log(f"seed {seed} done in {time.perf_counter() - t0:.0f} s")
        out.write_text(json.dumps(dict(args=vars(a), rows=rows), indent=1) + "\n")

    # ---- summary: gain CI per variant, paired difference vs unfiltered ----------------------------------
    summary = []
    kinds = [("filter", "variant"), ("ratio", "m")] + [("adapt:" + spec, "m") for spec in a.adapt
                                                       if pop is not None]
    for kind, key in kinds:
        base = {r["seed"]: r["gain"] for r in rows if r["kind"] == "filter" and r["variant"] == "none"}
        for val in dict.fromkeys(r[key] for r in rows if r["kind"] == kind):
            rs = sorted((r for r in rows if r["kind"] == kind and r[key] == val), key=lambda r: r["seed"])
            g = [r["gain"] for r in rs]
            ci = t_interval(g)
            diff = paired_difference(g, [base[r["seed"]] for r in rs]) if len(base) == len(rs) else None
            s = dict(kind=kind, variant=rs[0]["variant"], m=rs[0]["m"], ratio=rs[0]["ratio"], gain=ci,
                     vs_none=diff, identity=float(np.mean([r["identity"] for r in rs])),
                     rejection_rate=float(np.mean([r["rejection_rate"] for r in rs])),
                     per_filter={f: float(np.mean([r["per_filter"][f] for r in rs]))
                                 for f in rs[0]["per_filter"]})
            summary.append(s)
            log(f"{kind:6s} {rs[0]['variant']:30s} m={rs[0]['m']:3d} gain {format_ci(ci)} | vs none "
                f"{format_ci(diff) if diff else 'n/a'} | identity {s['identity']:.2f} | rejected "
                f"{100 * s['rejection_rate']:.0f}% {s['per_filter']}")
    out.write_text(json.dumps(dict(args=vars(a), rows=rows, summary=summary), indent=1) + "\n")


if __name__ == "__main__":
    main()
