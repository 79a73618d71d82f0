"""The sampler sweep of `dopplergen evaluate`: affinity and Fréchet distance against sampler, steps and
guidance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.sampling import DEFAULT_STEPS, default_sampler
from training.eval import metrics as fm
from training.eval.context import Context, Pool
from training.eval.sections import Reference, features


def sweep(ctx: Context, ref: Reference, pool: Pool) -> dict[str, Any]:
    """Affinity and FD vs sampler/steps and vs guidance; every setting samples the pool's seeds (or a
    prefix)."""
    st = ctx.st
    f_test = ctx.cache.get("f_test_all")
    n_users = len(ctx.data.users)
    rows = []
    settings = [("sampler", s, n, ctx.guidance) for s, n in sweep_samplers(ctx)]
    settings += [("guidance", ctx.sampler, ctx.steps, g) for g in st.sweep_guidance]
    done: dict[tuple, dict[str, Any]] = {}
    for kind, sched, steps, g in settings:
        key = (sched, steps, g)
        if key in done:
            rows.append({**done[key], "kind": kind})
            continue
        per_user = min(st.ddpm_per_user if sched == "ddpm" else st.sweep_per_user, ctx.gen_per_user)
        # the pool already holds these seeds at these settings
        if key == (ctx.sampler, ctx.steps, ctx.guidance):
            keep = np.concatenate([np.flatnonzero(pool.y == c)[:per_user] for c in range(n_users)])
            p = Pool(pool.x[keep], pool.y[keep], [pool.seeds[i] for i in keep],
                     pool.seconds * len(keep) / len(pool.y))
        else:
            y, seeds = ctx.plan(per_user)
            # DDPM-1000 runs as one batch: padding it to the batch size would waste most of its 1000 UNet
            # calls.
            p = ctx.sample(ctx.pipe, y, seeds, steps=steps, guidance=g, sampler=sched,
                           desc=f"sweep {sched} {steps} g{g}",
                           batch_size=len(y) if sched == "ddpm" else None)
        first = np.concatenate([np.flatnonzero(p.y == c)[:st.ddpm_per_user] for c in range(n_users)])
        f_gen = features(ref, p.x)
        row = dict(kind=kind, scheduler=sched, steps=steps, guidance=g, n=int(len(p.y)),
                   n_small=int(len(first)),
                   affinity=float((ref.clf.predict(p.x) == p.y).mean()),
                   fd=fm.frechet_distance(f_gen, f_test) if len(p.y) > 2 else math.nan,
                   fd_small=fm.frechet_distance(f_gen[first], f_test) if len(first) > 2 else math.nan,
                   seconds_per_sample=p.seconds / len(p.y))
        done[key] = row
        rows.append(row)
        ctx.log(f"sweep {sched:11s} {steps:4d} steps, guidance {g}: affinity {row['affinity']:.3f}, "
                f"FD(N={row['n']}) {row['fd']:.2f}, FD(N={row['n_small']}) {row['fd_small']:.2f}, "
                f"{row['seconds_per_sample']:.3f} s/sample")
    ddpm_steps = max((n for s, n in sweep_samplers(ctx) if s == "ddpm"), default=0)
    note = "" if not ddpm_steps else ("Every setting samples the same seeds (those of the generated pool). "
                                      f"DDPM-{ddpm_steps} costs ~{ddpm_steps // max(1, ctx.steps)}x the UNet "
                                      f"calls of {ctx.sampler} {ctx.steps}, so it gets {st.ddpm_per_user} "
                                      f"per user (one batch); the others {st.sweep_per_user} per user. 'FD "
                                      f"(N small)' uses the first {st.ddpm_per_user} per user of every "
                                      "setting, so all rows, DDPM included, compare at equal N; 'FD' uses "
                                      "all samples of the row (not available for DDPM at its N). Small N "
                                      "inflates FD: compare rows with each other, not with the fidelity "
                                      "section. Affinity uses all samples of the row; s / sample is wall "
                                      "time on the evaluating machine (noisy when it is shared).")
    return dict(note=note, rows=rows, conclusion=_sweep_conclusion(rows, ctx))


def sweep_samplers(ctx: Context) -> list[tuple[str, int]]:
    """The continuous schedulers for kl / vq-latent; respaced VQ-Diffusion step counts for vq-diffusion."""
    if ctx.pipe.route != "vq-diffusion":
        return list(ctx.st.sweep_samplers)
    total = int(ctx.pipe.scheduler_config["num_train_timesteps"])
    return [("vq-diffusion", n) for n in sorted({min(n, total) for n in ctx.st.sweep_vq_steps}, reverse=True)]


def _sweep_conclusion(rows: list[dict[str, Any]], ctx: Context) -> str:
    name = default_sampler(ctx.pipe.route)
    dpm = sorted((r for r in rows if r["kind"] == "sampler" and r["scheduler"] == name),
                 key=lambda r: r["steps"])
    ref_steps = ctx.steps if name == "vq-diffusion" else DEFAULT_STEPS
    ref = next((r for r in dpm if r["steps"] == ref_steps), dpm[-1] if dpm else None)
    if ref is None:
        return ""
    ok = [r for r in dpm if r["affinity"] >= ref["affinity"] - 0.02 and r["fd"] <= 1.15 * ref["fd"]]
    fewest = ok[0]["steps"] if ok else ref["steps"]
    guid = [r for r in rows if r["kind"] == "guidance"]
    best_aff = max(guid, key=lambda r: r["affinity"]) if guid else None
    best_fd = min(guid, key=lambda r: r["fd"]) if guid else None
    label = "VQ-Diffusion (respaced)" if name == "vq-diffusion" else "DPM-Solver++"
    s = (f"{label} keeps affinity within 2 points and FD within 15% of its {ref['steps']}-step result down "
         f"to {fewest} steps (of {[r['steps'] for r in dpm]}).")
    if best_aff and best_fd:
        s += (f" Over guidance {[r['guidance'] for r in guid]}, affinity peaks at {best_aff['guidance']} "
              f"({100 * best_aff['affinity']:.1f}%) and FD is lowest at {best_fd['guidance']} "
              f"({best_fd['fd']:.2f}); the pipeline default is {ctx.guidance}.")
    return s
