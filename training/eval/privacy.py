"""The evaluator's privacy section: are generated samples nearer to a person's training recordings than a new
recording of that person is? (docs/evaluation.md, "Privacy")

Distance to the closest record (DCR): the RMS difference in dB between two spectrograms at the best circular
time shift (gait is periodic and a recording starts anywhere in the cycle; the texture bank shifts the
residuals it adds), taken against the same person's training recordings. It is computed for every pair at
every shift at once through the cross-correlation theorem: ||x - roll(r, k)||^2 = |x|^2 + |r|^2 - 2 c(k), with
c = irfft(rfft(x) conj(rfft(r))) summed over the Doppler rows.

For two row groups, the evaluated pipeline's trained people (the main generated pool) and people enrolled from
k = 5 of their train recordings (the few-shot machinery, training/eval/fewshot.py, on the evaluated pipeline),
the section reports:
- the 5th percentile and the median of the DCR, generated vs held-out real (trained people: the test split;
  enrolled people: their other train recordings), as ratios;
- the share of copies: generated samples whose nearest / second-nearest training distance is below 1/3;
- a membership-inference test: a threshold on a real recording's distance to the nearest generated sample of
  its person, telling training recordings (members) from held-out ones; ROC AUC and TPR at 1% FPR.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

COPY_RATIO = 1 / 3  # nearest / second-nearest below this: a copy (Carlini et al. 2023's rule, in dB RMS)
ENROL_K = 5  # recordings per enrolled person
# people enrolled (at most; all at once, rows do not interact) and samples per enrolled person: 10 x 20 gives
# the attack 50 members (about 2 minutes on one CPU thread for the demo)
ENROLLED_PEOPLE, ENROLLED_PER_USER = 10, 20
QUICK_ENROLLED = (2, 4)
FPR = 0.01


# ---- distances ---------------------------------------------------------------------------------------------
def distances_db(x: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, shift: bool = True,
                 chunk: int = 128) -> np.ndarray:
    """(N, M): RMS distance in dB between each x (N, C, H, W) and each ref (M, C, H, W), minimised over the
    circular shifts along the last (time) axis (or at no shift)."""
    xs = torch.as_tensor(np.asarray(x), dtype=torch.float64).flatten(1, -2)  # (N, C*H, W)
    rs = torch.as_tensor(np.asarray(ref), dtype=torch.float64).flatten(1, -2)
    if xs.shape[1:] != rs.shape[1:]:
        raise ValueError(f"shapes differ: {tuple(np.shape(x))} vs {tuple(np.shape(ref))}")
    n_el, w = xs.shape[1] * xs.shape[2], xs.shape[2]
    nr = rs.pow(2).sum((1, 2))
    fr = torch.fft.rfft(rs, dim=-1).conj() if shift else None
    out = []
    for i in range(0, len(xs), chunk):
        xc = xs[i:i + chunk]
        if shift:
            cross = torch.einsum("nfw,mfw->nmw", torch.fft.rfft(xc, dim=-1), fr)
            c = torch.fft.irfft(cross, n=w, dim=-1).amax(-1)  # (n, M): best-aligned correlation
        else:
            c = torch.einsum("nfw,mfw->nm", xc, rs)
        d2 = xc.pow(2).sum((1, 2))[:, None] + nr[None] - 2 * c
        out.append(d2.clamp_min(0).div(n_el).sqrt())
    return torch.cat(out).numpy() if out else np.zeros((0, len(rs)))


def nearest_two(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and second-nearest distance of each row (inf when there is no second)."""
    s = np.sort(d, axis=1)
    return s[:, 0], (s[:, 1] if s.shape[1] > 1 else np.full(len(s), np.inf))


# ---- membership inference ----------------------------------------------------------------------------------
def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    _, inv, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inv]  # 1-based ranks, tied values share their mean rank
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float = FPR) -> float:
    """True-positive rate of the threshold that flags at most `fpr` of the negatives (score > threshold)."""
    neg_s = np.sort(np.asarray(neg, float))[::-1]
    if not len(pos) or not len(neg_s):
        return float("nan")
    allowed = int(np.floor(fpr * len(neg_s)))
    thr = neg_s[allowed] if allowed < len(neg_s) else -np.inf
    return float((np.asarray(pos, float) > thr).mean())


# ---- one row group -----------------------------------------------------------------------------------------
def group_stats(gen_x: np.ndarray, gen_y: np.ndarray, train_x: np.ndarray, train_y: np.ndarray,
                held_x: np.ndarray, held_y: np.ndarray, people: list[int]) -> dict[str, Any]:
    """DCR, copies and membership inference for `people` (labels): generated (gen_*), their training
    recordings (train_*: the members and the DCR's reference) and held-out real recordings (held_*)."""
    dg, dr, ratio, mem, non = [], [], [], [], []
    for p in people:
        ref, g, h = train_x[train_y == p], gen_x[gen_y == p], held_x[held_y == p]
        if not len(ref) or not len(g) or not len(h):
            continue
        d_g = distances_db(g, ref)
        d1, d2 = nearest_two(d_g)
        dg.append(d1)
        ratio.append(d1 / np.maximum(d2, 1e-12))
        dr.append(distances_db(h, ref).min(1))
        # attack: a real recording near some generated sample of its person is called a training recording
        mem.append(d_g.min(0))  # each training recording's distance to its nearest generated sample
        non.append(distances_db(h, g).min(1))
    if not dg:
        return dict(skipped="no person with generated, training and held-out recordings")
    dg_a, dr_a, ratio_a = np.concatenate(dg), np.concatenate(dr), np.concatenate(ratio)
    mem_a, non_a = np.concatenate(mem), np.concatenate(non)
    gp5, rp5 = float(np.percentile(dg_a, 5)), float(np.percentile(dr_a, 5))
    gmed, rmed = float(np.median(dg_a)), float(np.median(dr_a))
    return dict(
        n_people=len(dg), n_generated=int(len(dg_a)), n_heldout=int(len(dr_a)), n_training=int(len(mem_a)),
        generated_p5_db=gp5, heldout_p5_db=rp5, ratio_p5=gp5 / max(rp5, 1e-12),
        generated_median_db=gmed, heldout_median_db=rmed, ratio_median=gmed / max(rmed, 1e-12),
        copies=float((ratio_a < COPY_RATIO).mean()), n_copies=int((ratio_a < COPY_RATIO).sum()),
        min_nn_ratio=float(ratio_a.min()),
        mia=dict(auc=auc(-mem_a, -non_a), tpr_at_1pct_fpr=tpr_at_fpr(-mem_a, -non_a),
                 n_members=int(len(mem_a)), n_nonmembers=int(len(non_a))),
        dcr_generated=dg_a.round(3).tolist(), dcr_heldout=dr_a.round(3).tolist())


def enrolled_group(ctx: Any, people: int, per_user: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Enrol `people` of the data's people afresh from ENROL_K train recordings each (new rows on the
    evaluated pipeline, training/eval/fewshot.py at the evaluator's few-shot settings; the pipeline's bank
    with those recordings' residuals in place of the person's, as `dopplergen enroll` leaves it), sample
    them, and measure them against those ENROL_K recordings."""
    from training.eval.augmentation import fewshot_steps_for, select_k_per_user
    from training.eval.fewshot import FewShotConfig, adapt_new_users

    d = ctx.data
    chosen = list(range(min(people, len(d.users))))
    keep = np.isin(d.train_y, chosen)
    pick = np.flatnonzero(keep)[select_k_per_user(d.train_y[keep], ENROL_K, seed=ctx.seed)]
    names = [d.users[i] for i in chosen]
    x_k, y_k = d.train_x[pick], d.train_y[pick]
    pipe_k, log = adapt_new_users(ctx.pipe, x_k, y_k, names,
                                  FewShotConfig(steps=ctx.st.fewshot_steps, seed=ctx.seed))
    rest = ctx.pipe.texture.without(names) if ctx.pipe.texture is not None else None
    if rest is not None and pipe_k.texture is not None:  # others' entries stay, as `dopplergen enroll` does
        pipe_k.texture = rest.merged(pipe_k.texture)
    sub = replace(ctx, data=replace(d, users=names))
    y, seeds = sub.plan(per_user, stream=31)
    pool = sub.sample(pipe_k, y, seeds, steps=fewshot_steps_for(ctx, ctx.pipe), desc="privacy: enrolled")
    # held out: the people's other train recordings, which the evaluated pipeline's networks saw as much as
    # the ENROL_K (its test split would also measure how the UNet tells its training data from new data)
    held = np.setdiff1d(np.flatnonzero(keep), pick)
    stats = group_stats(pool.x, pool.y, x_k, y_k, d.train_x[held], d.train_y[held], list(range(len(names))))
    return stats, dict(people=names, k=ENROL_K, fewshot_steps=ctx.st.fewshot_steps,
                       sample_steps=fewshot_steps_for(ctx, ctx.pipe) or ctx.steps,
                       per_user=per_user, loss_first=log["loss_first"], loss_last=log["loss_last"],
                       seconds=round(pool.seconds, 1))


def privacy_section(ctx: Any, pool: Any) -> dict[str, Any]:
    """The section: trained people (the main pool vs the train split, held out: the test split) and enrolled
    people (ENROL_K recordings each); a figure of the distance distributions."""
    d = ctx.data
    people, per_user = QUICK_ENROLLED if ctx.st.quick else (ENROLLED_PEOPLE, ENROLLED_PER_USER)
    res: dict[str, Any] = dict(method=METHOD, copy_ratio=COPY_RATIO, groups={})
    res["groups"]["trained"] = group_stats(pool.x, pool.y, d.train_x, d.train_y, d.test_x, d.test_y,
                                           list(range(len(d.users))))
    res["groups"]["enrolled"], res["enrolment"] = enrolled_group(ctx, people, per_user)
    for name, g in res["groups"].items():
        if "skipped" in g:
            ctx.log(f"privacy ({name}): {g['skipped']}")
            continue
        ctx.log(f"privacy ({name}): DCR 5th pct {g['generated_p5_db']:.2f} vs held-out "
                f"{g['heldout_p5_db']:.2f} dB ({g['ratio_p5']:.2f}x), median "
                f"{g['generated_median_db']:.2f} vs "
                f"{g['heldout_median_db']:.2f} dB ({g['ratio_median']:.2f}x) | copies "
                f"{100 * g['copies']:.1f}% | membership AUC {g['mia']['auc']:.3f}, TPR@1%FPR "
                f"{100 * g['mia']['tpr_at_1pct_fpr']:.1f}% (n = {g['n_generated']} generated)")
    figure(res, ctx.out / "figures" / "privacy.png")
    return res


METHOD = ("Distance to the closest record (DCR): RMS difference in dB at the best circular time shift, "
          "against the same person's training recordings. Held-out real: the person's test recordings "
          "against the same references. Copy: nearest / second-nearest training distance below 1/3. "
          "Membership inference: a threshold on a real recording's distance to the nearest generated "
          "sample of its person, members = the training recordings, non-members = the test recordings. "
          f"Enrolled: people of the data enrolled afresh from {ENROL_K} train recordings each on the "
          "evaluated pipeline (training/eval/fewshot.py), those recordings being their training set and "
          "their other train recordings the held-out ones (the networks saw both alike).")


# ---- report ------------------------------------------------------------------------------------------------
def targets(res: dict[str, Any]) -> list[tuple[str, float | None, str, str]]:
    """(name, value, TARGETS key, op) rows for report.targets."""
    groups = res.get("privacy", {}).get("groups", {})
    rows: list[tuple[str, float | None, str, str]] = []
    for name in ("trained", "enrolled"):
        g = groups.get(name)
        if g and "skipped" not in g:
            rows += [(f"privacy ({name}): DCR 5th pct, generated / held-out", g["ratio_p5"],
                      "privacy_ratio", ">="),
                     (f"privacy ({name}): copies", g["copies"], "copies", "<="),
                     (f"privacy ({name}): membership AUC", g["mia"]["auc"], "membership_auc", "<=")]
    return rows


def markdown(res: dict[str, Any], figures: str = "figures") -> list[str]:
    pv = res.get("privacy")
    if not pv:
        return []
    L = ["## Privacy: distance to the closest record", "", pv["method"], "",
         "| people | generated | held-out | DCR 5th pct gen / real (dB) | ratio | DCR median gen / real (dB) "
         "| ratio | copies | membership AUC | TPR at 1% FPR |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, g in pv["groups"].items():
        if "skipped" in g:
            L.append(f"| {name} | {g['skipped']} | | | | | | | | |")
            continue
        m = g["mia"]
        L.append(f"| {name} ({g['n_people']}) | {g['n_generated']} | {g['n_heldout']} | "
                 f"{g['generated_p5_db']:.2f} / {g['heldout_p5_db']:.2f} | {g['ratio_p5']:.3f} | "
                 f"{g['generated_median_db']:.2f} / {g['heldout_median_db']:.2f} | {g['ratio_median']:.3f} | "
                 f"{100 * g['copies']:.1f}% ({g['n_copies']}) | {m['auc']:.3f} | "
                 f"{100 * m['tpr_at_1pct_fpr']:.1f}% ({m['n_members']} vs {m['n_nonmembers']}) |")
    e = pv.get("enrolment")
    if e:
        L += ["", f"Enrolled: {', '.join(e['people'])} from {e['k']} train recordings each, "
                  f"{e['fewshot_steps']} adaptation steps, {e['per_user']} samples each at "
                  f"{e['sample_steps']} steps."]
    if res.get("figures", {}).get("privacy.png"):
        L += ["", f"![privacy: distance distributions]({figures}/privacy.png)"]
    return L + [""]


def figure(res: dict[str, Any], path: Any) -> None:
    """Histograms of the DCR, generated vs held-out real, one panel per row group."""
    from training.eval.plots import PNG_METADATA, pyplot

    groups = [(n, g) for n, g in res["groups"].items() if "skipped" not in g]
    if not groups:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
    for ax, (name, g) in zip(axes[0], groups, strict=True):
        a, b = np.asarray(g["dcr_generated"]), np.asarray(g["dcr_heldout"])
        bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 30)
        ax.hist(b, bins=bins, density=True, alpha=0.55, label=f"held-out real (n={len(b)})")
        ax.hist(a, bins=bins, density=True, alpha=0.55, label=f"generated (n={len(a)})")
        ax.set(title=f"{name}: ratio at 5th pct {g['ratio_p5']:.2f}", xlabel="DCR (dB RMS, best shift)",
               ylabel="density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=PNG_METADATA)
    plt.close(fig)
