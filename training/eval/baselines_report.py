"""The "Versus the alternatives" section's text, table and figures (the measuring is in baselines.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from training.eval import plots
from training.eval.stats import format_ci

NAMES = {"real": "(a) real only", "classic:time_mask": "(b) time masks",
         "classic:freq_mask": "(b) frequency masks", "classic:time_shift": "(b) time shift",
         "classic:mixup": "(b) mixup", "classic:noise": "(b) noise", "classic:all": "(b) classic, combined",
         "acgan": "(c) ACGAN", "acgan+sift": "(c) ACGAN + kinematic sifting", "ours": "(d) ours",
         "ours+classic": "(d) ours + classic"}


def protocol(res: dict[str, Any], st: Any) -> str:
    g, c, p = res["gan"], res["classic"], res["population"]
    return (
        "Same few-shot protocol as the augmentation section: for each k and seed the same k real train "
        "recordings per person, the same classifier (UserCNN) and seed, the same optimiser budget (that of k "
        f"real + m = {st.synth_per_user} per person), the same balanced mix and the same real test split. "
        "Real only (a) is trained once per (k, seed); each arm adds m recordings per person. "
        f"(b) classic augmentation of the k ({c['described']}; masks filled with the spectrogram's mean, "
        "SpecAugment-style, written in torch because torchaudio has no build for the pinned torch; mixup "
        "between two recordings of the same person, as the classifier takes hard labels), strengths tuned "
        f"once on the population ({p['users']} simulated people disjoint from the targets"
        + (f", their {p['activity']} recordings only, as the targets'" if p.get("activity") else "")
        + f": k = {c['tune_k']} "
        "per person from its train split, scored on its test split), never on the targets. (c) ACGAN "
        f"(DCGAN layers, width {g['config']['width']}, batch {g['config']['batch_size']}) pretrained "
        f"{g['config']['pretrain_steps']} steps on the population, then fine-tuned "
        f"{g['config']['finetune_steps']} steps per trial on population + the targets' k (target classes "
        "started at the population's mean embedding); kinematic sifting draws "
        f"{g['sift_factor']:g} x m candidates per person and keeps those whose torso speed, envelope speed "
        f"and cadence lie within {g['sift_z']:g} robust z of the person's k real recordings "
        "(training.eval.filters physics filter; topped up by z when too few pass). (d) ours: "
        + (res["ours"].get("how") or "the population pipeline adapted to the k by new user rows (as the "
           "augmentation section)") + ", and ours + classic: ours' samples through the "
        "combined classic transforms. Gains are paired per seed against (a); the best alternative is the arm "
        "of (a)-(c) with the highest mean gain at that k, picked on the same seeds (which favours it), and "
        "ours minus it is a paired t-interval over the seeds.")


def _ci(ci: dict[str, Any]) -> dict[str, Any]:
    """An interval with report.json's nulls (non-finite numbers) back as NaN."""
    return {k: math.nan if v is None else v for k, v in ci.items()}


def _cell(row: dict[str, Any]) -> str:
    return f"{format_ci(_ci(row['gain_ci95']))} ({100 * row['acc']['mean']:.1f}%)"


def markdown(b: dict[str, Any], figures: str = "figures") -> list[str]:
    s = b["summary"]
    ks = list(s)
    L = ["## Versus the alternatives", "", "**Protocol.** " + b["protocol"], ""]
    L += ["Gain over (a) in points, 95% CI over seeds (test accuracy in brackets). Time on this machine: per "
          "trial = making the m per person (fine-tuning or adapting the generator, sampling, sifting, "
          "transforms; not the classifier fits), one-off = what every trial shares.", "",
          "| arm | " + " | ".join(f"k = {k}" for k in ks) + " | per trial (s) | one-off (s) |",
          "| --- |" + " --- |" * (len(ks) + 2)]
    one_off = {"classic": b["classic"]["seconds"], "acgan": b["gan"]["pretrain"]["seconds"],
               "ours": b["ours"].get("population_train_s")}
    for a in ["real", *b["arms"]]:
        cells = [f"{100 * s[k]['rows']['real']['acc']['mean']:.1f}%" if a == "real"
                 else _cell(s[k]["rows"][a]) for k in ks]
        per = np.mean([s[k]["rows"][a].get("seconds", math.nan) for k in ks]) if a != "real" else math.nan
        once = next((v for key, v in one_off.items() if a.startswith(key)), None)
        once_s = ("n/a" if once is None else f"{once:.0f}") + (" (tuning)" if a.startswith("classic") else
                                                              " (pretrain)" if a.startswith("acgan") else
                                                              (" (its training)" if b["ours"].get("how")
                                                               else " (population, stage 2)")
                                                              if a.startswith("ours")
                                                              else "")
        L.append(f"| {NAMES.get(a, a)} | " + " | ".join(cells) + " | "
                 + ("—" if not math.isfinite(per) else f"{per:.1f}") + " | "
                 + ("—" if a == "real" else once_s) + " |")
    L.append("")
    for k in ks:
        rej = s[k]["rows"].get("acgan+sift", {}).get("rejection_rate")
        if rej is not None:
            L.append(f"- k = {k}: kinematic sifting rejected {100 * rej:.1f}% of the ACGAN's candidates.")
    for k in ks:
        best = s[k]["best_alternative"]
        for a, ci in s[k]["versus_best"].items():
            ci = _ci(ci)
            verdict = ("lower bound above 0: ours wins" if ci.get("lo", math.nan) > 0 else
                       "upper bound below 0: ours loses" if ci.get("hi", math.nan) < 0 else "not resolved")
            L.append(f"- k = {k}: {NAMES[a]} minus the best alternative ({NAMES.get(best, best)}): "
                     f"{format_ci(ci)} points over {ci['n']} seeds ({verdict}).")
    for arm, why in (b.get("skipped") or {}).items():
        L.append(f"- {NAMES.get(arm, arm)}: not run, {why}.")
    if not b["ours"]["measured"]:
        L.append("- (d) ours: not measured in this run (needs `--fewshot` and its population pipeline).")
    L += ["", f"![versus the alternatives]({figures}/baselines.png)", "",
          f"![real, ACGAN and ours]({figures}/baselines_samples.png)", ""]
    return L


def figures(b: dict[str, Any], examples: dict[str, np.ndarray], data: Any, test_x: np.ndarray,
            test_y: np.ndarray, fig_dir: Path) -> None:
    """baselines.png: gain over real only per arm and k with 95% CIs; baselines_samples.png: real test
    recordings of the first two persons above each generator's samples for them (first k, first seed)."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    s = b["summary"]
    if s:
        plt = plots.pyplot()
        ks, arms = list(s), b["arms"]
        fig, ax = plt.subplots(figsize=(7, 3.6))
        width = 0.8 / max(1, len(arms))
        for j, a in enumerate(arms):
            m = [100 * s[k]["rows"][a]["gain_ci95"]["mean"] for k in ks]
            half = [100 * np.nan_to_num(s[k]["rows"][a]["gain_ci95"]["half_width"]) for k in ks]
            ax.bar(np.arange(len(ks)) + (j - (len(arms) - 1) / 2) * width, m, width, yerr=half, capsize=2,
                   label=NAMES.get(a, a))
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(ks)), [f"k = {k}" for k in ks])
        ax.set_ylabel("gain over real only (points)")
        ax.legend(fontsize=6, ncol=2)
        ax.set_title("versus the alternatives (95% CI over seeds)", fontsize=9)
        fig.tight_layout()
        fig.savefig(fig_dir / "baselines.png", dpi=100, metadata=plots.PNG_METADATA)
        plt.close(fig)
    rows = []
    for u in range(min(2, len(data.users))):
        rows.append((f"{data.users[u]} real", [x for x in test_x[test_y == u][:3]]))
    for a in ("acgan", "acgan+sift", "ours", "classic:all"):
        if a in examples:
            ex = examples[a]
            rows += [(f"{data.users[u]} {a}", list(ex[3 * u:3 * u + 3]))
                     for u in range(min(2, len(data.users)))]
    if len(rows) > 2:
        plots.spectrogram_grid(rows, data.meta, fig_dir / "baselines_samples.png",
                               title="real test recordings and each generator's samples (first trial)")
