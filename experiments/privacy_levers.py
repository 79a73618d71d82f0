"""Which lever brings generated samples no nearer to a person's training recordings than a new recording of
them? (issue 35; a measurement, docs/evaluation.md "Privacy")

Each row is the privacy section's statistics (training/eval/privacy.py: DCR 5th percentile and median ratio,
generated vs held-out real, copies, membership AUC) for one setting, on the same seeds:

- trained people (the evaluated pipeline's rows): the decoded samples are drawn once per guidance, and every
  texture-bank variant is applied to the same decoded samples with the same per-sample generators: residual
  source (the person's own recordings, or the population's: other people's), candidates (`choices`), shift
  (the fitted one, or a random one), no bank at all; then the sampler's guidance with the default bank;
- enrolled people (ENROL_K = 5 train recordings each, new rows on the evaluated pipeline, as the privacy
  section does): enrolment steps, sampling guidance, and the bank's residual source (their own 5 recordings,
  or the population's: the evaluated pipeline's bank less the enrolled people's entries).

    OMP_NUM_THREADS=1 python -m experiments.privacy_levers --pipeline checkpoints/demo --data data/sim10c \
        --threads 1 --part trained      # then --part enrolled, --part realism --per-user 30

Small counts (the machine is shared): each row prints the 95% bootstrap interval of its 5th-percentile ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def bank_variant(bank, **opts):
    from models.texture import TextureBank

    owners = [bank.config.users[int(i)] for i in bank.owners]
    return TextureBank.from_pairs(bank.means.float(), bank.residuals.float(), owners,
                                  bank.config.dyn_range_db, per_user=len(owners),
                                  **{**bank.options(), **opts})


def with_bank(bank, x_db, names, seeds, pool=None):
    """`pool`: how many of the other people's entries a sample is matched against with source="population"
    (models.texture.POPULATION_POOL, 256; None: that default)."""
    import models.texture as tex

    if bank is None:
        return x_db
    gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
    default, tex.POPULATION_POOL = tex.POPULATION_POOL, pool or tex.POPULATION_POOL
    try:
        return bank.add(torch.as_tensor(x_db), names, gens).numpy()
    finally:
        tex.POPULATION_POOL = default


def bootstrap_ratio(dg, dr, n=1000, seed=0):
    rng = np.random.default_rng(seed)
    r = [np.percentile(rng.choice(dg, len(dg)), 5) / np.percentile(rng.choice(dr, len(dr)), 5)
         for _ in range(n)]
    return [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]


def row(name, stats, seconds, log):
    ci = bootstrap_ratio(np.asarray(stats["dcr_generated"]), np.asarray(stats["dcr_heldout"]))
    out = dict(setting=name, ratio_p5=stats["ratio_p5"], ratio_p5_ci95=ci, ratio_median=stats["ratio_median"],
               generated_p5_db=stats["generated_p5_db"], heldout_p5_db=stats["heldout_p5_db"],
               generated_median_db=stats["generated_median_db"], heldout_median_db=stats["heldout_median_db"],
               copies=stats["copies"], auc=stats["mia"]["auc"], tpr_1pct=stats["mia"]["tpr_at_1pct_fpr"],
               n_generated=stats["n_generated"], n_heldout=stats["n_heldout"], seconds=round(seconds, 1),
               load=os.getloadavg()[0])
    log(f"{name:42s} p5 ratio {out['ratio_p5']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | median ratio "
        f"{out['ratio_median']:.3f} | copies {100 * out['copies']:.1f}% | AUC {out['auc']:.3f} | TPR@1% "
        f"{100 * out['tpr_1pct']:.1f}% | n {out['n_generated']} | {seconds:.0f} s, load {out['load']:.2f}")
    return out


def trained(pipe, d, ctx, a, log):
    from training.eval.privacy import group_stats

    bank = pipe.texture
    people = list(range(min(a.people, len(d.users))))
    y, seeds = ctx.plan(a.per_user, stream=35)
    keep = np.isin(y, people)
    y, seeds = y[keep], [s for s, k in zip(seeds, keep, strict=True) if k]
    names = [d.users[int(c)] for c in y]
    tr, te = np.isin(d.train_y, people), np.isin(d.test_y, people)

    def stats(x):
        return group_stats(x, y, d.train_x[tr], d.train_y[tr], d.test_x[te], d.test_y[te], people)

    rows, pipe.texture = [], None
    for g in a.guidance:
        t0 = time.perf_counter()
        plain = ctx.sample(pipe, y, seeds, guidance=g, desc=f"guidance {g}").x
        dt = time.perf_counter() - t0
        own, pop = bank_variant(bank, source="own"), bank_variant(bank, source="population")
        variants = ([("no bank", None), ("own, fit, 3 choices (before issue 35)", own),
                     ("own, fit, 10 choices", bank_variant(own, choices=10)),
                     ("own, random shift", bank_variant(own, shift="random")),
                     ("population, fit, 32 drawn", (pop, 32)),
                     ("population, fit, up to 256 (the default)", pop),
                     ("population, random shift, 32 drawn", (bank_variant(pop, shift="random"), 32))]
                    if g == a.guidance[0] else [("own, fit, 3 choices (before issue 35)", own),
                                                ("population, fit, up to 256 (the default)", pop)])
        for name, b in variants:
            b, pool = b if isinstance(b, tuple) else (b, None)
            rows.append(row(f"guidance {g}: {name}", stats(with_bank(b, plain, names, seeds, pool)), dt, log))
    return rows


def enrolled(pipe, d, ctx, a, log):
    from dataclasses import replace

    from training.eval.augmentation import select_k_per_user
    from training.eval.fewshot import FewShotConfig, adapt_new_users
    from training.eval.privacy import ENROL_K, group_stats

    if a.enrol_data:  # people the pipeline never saw: held out = every other recording of theirs
        from training.data.dataset import load_dataset

        ds = load_dataset(a.enrol_data, channels=pipe.channels, size=pipe.image_size)
        names = [f"new-{u}" for u in ds.users[:a.enrolled]]
        x_all, y_all, in_train = ds.x, ds.labels, ds.splits == "train"
    else:  # the data's people, enrolled afresh: held out = their other train recordings (as the section)
        names = [d.users[i] for i in range(a.enrolled)]
        x_all, y_all, in_train = d.train_x, d.train_y, np.ones(len(d.train_y), bool)
    chosen = list(range(len(names)))
    keep = np.isin(y_all, chosen) & in_train
    pick = np.flatnonzero(keep)[select_k_per_user(y_all[keep], ENROL_K, seed=0)]
    x_k, y_k = x_all[pick], y_all[pick]
    held = np.setdiff1d(np.flatnonzero(np.isin(y_all, chosen)), pick)
    held_x, held_y = x_all[held], y_all[held]
    sub = replace(ctx, data=replace(d, users=names))
    y, seeds = sub.plan(a.enrolled_per_user, stream=31)
    gen_names = [names[int(c)] for c in y]
    pop_bank = pipe.texture.without(names)  # None when every person is enrolled: the others enrolled are it
    rows = []
    for steps, reg in [(n, r) for n in a.enrol_steps for r in a.enrol_reg]:
        t0 = time.perf_counter()
        pipe_k, _ = adapt_new_users(pipe, x_k, y_k, names, FewShotConfig(steps=steps, seed=0, reg=reg))
        own = pipe_k.texture
        pipe_k.texture = None
        t_enrol = time.perf_counter() - t0
        for g, gc in [(g, gc) for g in a.enrolled_guidance for gc in a.enrolled_condition_guidance]:
            t1 = time.perf_counter()
            sub_c = replace(sub, condition_guidance=gc)  # None: plain guidance (the drawn conditions with it)
            plain = sub_c.sample(pipe_k, y, seeds, guidance=g, steps=a.enrolled_steps,
                                 desc=f"enrolled g {g}").x
            dt = t_enrol + time.perf_counter() - t1
            for name, b in (("own 5 recordings", bank_variant(own, source="own")),
                            ("population", bank_variant(pop_bank.merged(own) if pop_bank else own,
                                                        source="population"))):
                x = with_bank(b, plain, gen_names, seeds)
                st = group_stats(x, y, x_k, y_k, held_x, held_y, chosen)
                label = (f"{steps} steps{f', reg {reg:g}' if reg else ''}, guidance {g}"
                         f"{f', condition guidance {gc:g}' if gc is not None else ''}: {name}")
                rows.append(row(label, st, dt, log))
    return rows


def realism(pipe, d, ctx, a, log):
    """The bank variants' cost in realism: the two-sample test (a fresh CNN, real train vs generated, as the
    evaluator's C2ST) on the same decoded samples."""
    from training.eval import metrics as fm

    bank = pipe.texture
    y, seeds = ctx.plan(a.per_user, stream=36)
    names = [d.users[int(c)] for c in y]
    pipe.texture = None
    t0 = time.perf_counter()
    plain = ctx.sample(pipe, y, seeds, desc="realism").x
    dt = time.perf_counter() - t0
    real = d.train_x[np.random.default_rng(0).permutation(len(d.train_y))[:len(y)]]

    def fit_cnn(x, yy, seed):
        return ctx.fit(x, yy, seed=seed, num_classes=2).predict

    rows = []
    own, pop = bank_variant(bank, source="own"), bank_variant(bank, source="population")
    for name, b in (("no bank", None), ("own, fit (before issue 35)", own),
                    ("own, random shift", bank_variant(own, shift="random")),
                    ("population, fit, 32 drawn", (pop, 32)),
                    ("population, fit, up to 256 (the default)", pop)):
        t1 = time.perf_counter()
        b, pool = b if isinstance(b, tuple) else (b, None)
        c = fm.two_sample_test(real, with_bank(b, plain, names, seeds, pool), fit_cnn, seed=0)
        rows.append(dict(setting=name, c2st=c["accuracy"], stderr=c["stderr"], n_test=c["n_test"],
                         seconds=round(dt + time.perf_counter() - t1, 1), load=os.getloadavg()[0]))
        log(f"{name:24s} two-sample accuracy {c['accuracy']:.3f} ± {c['stderr']:.3f} (n_test "
            f"{c['n_test']}) | {time.perf_counter() - t1:.0f} s, load {os.getloadavg()[0]:.2f}")
    return rows


def section(pipe, d, ctx, a, log):
    """The evaluator's privacy section itself (training/eval/privacy.py) on a pool of --per-user samples per
    person, with the bank's residual source set to --bank-source (the enrolled people's banks follow it)."""
    from training.eval import privacy
    from training.eval.report import TARGETS

    if pipe.texture is not None:  # enrolled people's banks draw as the pipeline's (fewshot.adapt_new_users)
        pipe.texture.register_to_config(source=a.bank_source)
    (ctx.out / "figures").mkdir(parents=True, exist_ok=True)
    y, seeds = ctx.plan(a.per_user)
    pool = ctx.sample(pipe, y, seeds, desc="section pool")
    res = {"privacy": privacy.privacy_section(ctx, pool)}
    for name, v, k, op in privacy.targets(res):
        met = v >= TARGETS[k] if op == ">=" else v <= TARGETS[k]
        log(f"{name}: {v:.3f} (target {op} {TARGETS[k]}) {'met' if met else 'MISSED'}")
    (ctx.out / f"privacy-{a.bank_source}.md").write_text("\n".join(privacy.markdown(res)) + "\n")
    return {k: v for k, v in res["privacy"].items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim10c")
    p.add_argument("--part", choices=("trained", "enrolled", "realism", "section"), default="trained")
    p.add_argument("--bank-source", default="own", help="--part section: the texture bank's residual source")
    p.add_argument("--people", type=int, default=10, help="trained people measured")
    p.add_argument("--per-user", type=int, default=8, help="generated per trained person")
    p.add_argument("--guidance", type=float, nargs="+", default=[2.0, 1.0, 4.0],
                   help="sampler guidance of the trained rows (the first gets every bank variant)")
    p.add_argument("--enrolled", type=int, default=3, help="people enrolled from 5 recordings")
    p.add_argument("--enrolled-per-user", type=int, default=20)
    p.add_argument("--enrol-data", default=None,
                   help="enrol this data set's people (unseen by the pipeline) instead of the data's")
    p.add_argument("--enrol-steps", type=int, nargs="+", default=[50, 150])
    p.add_argument("--enrol-reg", type=float, nargs="+", default=[0.0],
                   help="pull of the new rows toward the population's mean row (EnrolConfig.reg)")
    p.add_argument("--enrolled-guidance", type=float, nargs="+", default=[2.0, 4.0])
    p.add_argument("--enrolled-steps", type=int, default=10, help="sampler steps of the enrolled rows")
    p.add_argument("--enrolled-condition-guidance", type=float, nargs="+", default=[None],
                   help="compose the enrolled rows' guidance with this pull toward the drawn conditions")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/privacy-levers/levers.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from experiments.common import open_run

    pipe, d, ctx, log, out = open_run(a.pipeline, a.data, a.out, a.threads)
    out = Path(str(out).replace(".json", f"-{a.part}.json"))
    log(f"{a.part}: load average {os.getloadavg()}")
    part = dict(trained=trained, enrolled=enrolled, realism=realism, section=section)[a.part]
    rows = part(pipe, d, ctx, a, log)
    out.write_text(json.dumps(dict(args=vars(a), rows=rows), indent=1) + "\n")
    log(f"-> {out}")


if __name__ == "__main__":
    main()
