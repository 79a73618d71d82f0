"""The evaluation report: Markdown tables from report.json's dict, and the PNG figures (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

CMAP = "jet"  # one colour map for every spectrogram in the report, as in the dataset previews


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _f(v: Any, nd: int = 3, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.{nd}f}"


# ---- figures ---------------------------------------------------------------------------------------------------
def real_vs_generated_figure(rows: list[tuple[str, list[np.ndarray], list[np.ndarray]]], meta: dict[str, Any],
                             path: Path, title: str) -> Path:
    """Per user a 'real' row above a 'generated' row: same colour map, colour limits and axes (A's grid helper)."""
    from training.preview import spectrogram_grid

    grid = []
    for user, real, gen in rows:
        grid += [(f"{user} real", real), (f"{user} generated", gen)]
    return spectrogram_grid(grid, meta, path, title=title, cmap=CMAP)


def metrics_figure(targets: list[dict[str, Any]], path: Path) -> Path:
    """Bar chart: each headline metric against its target (green = met, red = missed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(targets) + 1.2))
    names = [t["name"] for t in targets]
    vals = [t["value"] if t["value"] is not None and math.isfinite(t["value"]) else 0.0 for t in targets]
    colours = ["tab:green" if t["pass"] else ("tab:gray" if t["pass"] is None else "tab:red") for t in targets]
    y = np.arange(len(targets))
    ax.barh(y, vals, color=colours)
    for i, t in enumerate(targets):
        ax.plot([t["target"]] * 2, [i - 0.4, i + 0.4], "k--", lw=1)
        ax.text(max(vals[i], 0) + 0.01, i, f"{t['display']} (target {t['op']} {t['target_display']})", va="center",
                fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, min(vals) - 0.05), max(1.3, max(vals) + 0.6))
    ax.set_title("headline metrics vs targets (dashed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def sweep_figure(sweep: list[dict[str, Any]], path: Path) -> Path:
    """Affinity and Fréchet distance against sampler/steps (left) and against guidance scale (right)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    samplers = [s for s in sweep if s["kind"] == "sampler"]
    guid = sorted((s for s in sweep if s["kind"] == "guidance"), key=lambda s: s["guidance"])
    labels = [f"{s['scheduler']}\n{s['steps']} steps" for s in samplers]
    x = np.arange(len(samplers))
    for row, (key, name) in enumerate((("affinity", "affinity (GAN-test acc.)"), ("fd_small", "Fréchet distance (N small)"))):
        axes[row][0].bar(x, [s[key] for s in samplers], color="tab:blue")
        axes[row][0].set_xticks(x, labels, fontsize=7)
        axes[row][0].set_ylabel(name, fontsize=8)
        axes[row][1].plot([s["guidance"] for s in guid], [s[key] for s in guid], "o-")
        axes[row][1].set_xlabel("guidance scale", fontsize=8)
        axes[row][1].set_ylabel(name, fontsize=8)
    n_small = samplers[0]["n_small"] if samplers else 0
    fig.suptitle(f"sampler sweep (Fréchet distance on the same {n_small} seeds for every setting)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def augmentation_figure(summary: dict[str, dict[str, Any]], path: Path) -> Path:
    """Test accuracy vs real recordings per user: real only vs real + synthetic (mean ± std over seeds)."""
    plt = _plt()
    ks = list(summary)
    x = np.arange(len(ks))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, name, off in (("acc_real", "real only", -0.1), ("acc_augmented", "real + synthetic", 0.1)):
        ax.errorbar(x + off, [summary[k][key]["mean"] for k in ks], yerr=[summary[k][key]["std"] for k in ks],
                    fmt="o-", capsize=3, label=name)
    ax.set_xticks(x, [f"k={k}" for k in ks])
    ax.set_ylabel("real test accuracy")
    ax.set_title("augmentation gain", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# ---- markdown ---------------------------------------------------------------------------------------------------
def markdown(res: dict[str, Any], figures: str = "figures") -> str:
    """The human report: headline table against targets, then one section per metric family.

    `figures` is the figure folder relative to where the Markdown file is written.
    """
    L: list[str] = []
    p, d, s = res["pipeline"], res["data"], res["settings"]
    L += [f"# Evaluation report: {p['name']} {p['version']}", ""]
    L += [f"- pipeline: `{p['path']}` (fingerprint `{p['fingerprint']}`), trained on dataset fingerprint "
          f"`{p.get('dataset_fingerprint')}`",
          f"- data: `{d['path']}` (fingerprint `{d['fingerprint']}`; {d['n_train']} train / {d['n_test']} test "
          f"recordings, {len(d['users'])} users){'' if d['matches_pipeline'] else ' — **not the dataset the pipeline was trained on**'}",
          f"- sampling: {s['scheduler']} {s['steps']} steps, guidance {s['guidance']}, {s['gen_per_user']} "
          f"generated per user; mode: {'quick' if s['quick'] else 'full'}; device {s['device']}",
          f"- evaluation run time: {res['runtime_s']:.0f} s", ""]
    L += ["## Headline metrics against targets", "", "| metric | measured | target | met | margin |",
          "| --- | --- | --- | --- | --- |"]
    for t in res["targets"]:
        met = "n/a" if t["pass"] is None else ("yes" if t["pass"] else "**no**")
        L.append(f"| {t['name']} | {t['display']} | {t['op']} {t['target_display']} | {met} | {t.get('margin', '')} |")
    L += ["", f"![headline metrics]({figures}/metrics.png)", ""]
    pictures = dict(gan=("real test vs generated, per user", "real_vs_generated.png"),
                    augmentation=("augmentation gain", "augmentation.png"), sweep=("sampler sweep", "sampler_sweep.png"))
    for section in ("reconstruction", "gan", "fidelity", "physics", "augmentation", "sweep", "appendix"):
        L += _SECTIONS[section](res)
        if section in pictures and res.get("figures", {}).get(pictures[section][1]):
            L += [f"![{pictures[section][0]}]({figures}/{pictures[section][1]})", ""]
    return "\n".join(L) + "\n"


def _reconstruction(res: dict[str, Any]) -> list[str]:
    r = res["reconstruction"]
    return ["## Reconstruction (stage-1 VAE)", "",
            f"Test split, {r['n']} recordings, encoded to the posterior mode and decoded. {r['space']}", "",
            "| PSNR (dB) | SSIM | mean abs. error (dB) |", "| --- | --- | --- |",
            f"| {_f(r['psnr_db'], 2)} | {_f(r['ssim'], 4)} | {_f(r['mae_db'], 2)} |", ""]


def _gan(res: dict[str, Any]) -> list[str]:
    g = res["gan"]
    return ["## Affinity (GAN-test) and diversity (GAN-train / TSTR)", "",
            "Reference classifier: " + g["classifier"], "",
            "| quantity | accuracy | reference | ratio |", "| --- | --- | --- | --- |",
            f"| affinity: trained on real train, tested on generated (labelled with the requested user) | "
            f"{_f(g['affinity'], pct=True)} | real test {_f(g['trtr'], pct=True)} | {_f(g['affinity_ratio'])} |",
            f"| TSTR: trained on generated only, tested on real test | {_f(g['tstr'], pct=True)} | "
            f"TRTR {_f(g['trtr'], pct=True)} | {_f(g['tstr_ratio'])} |", ""]


def _fidelity(res: dict[str, Any]) -> list[str]:
    f = res["fidelity"]
    c = f["c2st"]
    vae_row = ([f"The same test on the VAE's own reconstructions of real train recordings (no diffusion at all) gives "
                f"**{_f(f['c2st_vae']['accuracy'])}**: the floor for any generator that decodes through this VAE."
                + (f" ({f['c2st_vae']['note']})" if f["c2st_vae"].get("note") else ""), ""]
               if f.get("c2st_vae") else [])
    return ["## Fidelity distances", "",
            f"Fréchet distance in the reference classifier's {f['feature_dim']}-d feature space, {f['n']} vs {f['n']} "
            "recordings (sample counts matched, since the estimate is biased by N).", "",
            "| pair | Fréchet distance |", "| --- | --- |",
            f"| generated vs real test | {_f(f['fd_generated_test'], 2)} |",
            f"| real train vs real test (the scale: two real draws) | {_f(f['fd_train_test'], 2)} |",
            f"| ratio | {_f(f['fd_ratio'], 2)} |", "",
            f"Classifier two-sample test ({c['classifier']}): held-out accuracy **{_f(c['accuracy'])}** on "
            f"{c['n_test']} recordings (±{_f(c['stderr'])} binomial s.e. at chance; 0.5 = indistinguishable, "
            "1.0 = always told apart).", "", *vae_row]


def _physics(res: dict[str, Any]) -> list[str]:
    ph = res["physics"]
    qs = list(ph["mean_rel_error"])
    L = ["## Physics consistency", "", ph["method"], "",
         "| user | " + " | ".join(f"{q} real / gen / rel. err." for q in qs) + " |",
         "| --- |" + " --- |" * len(qs)]
    for u, row in ph["per_user"].items():
        L.append(f"| {u} | " + " | ".join(
            f"{_f(row[q]['real_median'], 2)} / {_f(row[q]['generated_median'], 2)} / {_f(row[q]['rel_error'], pct=True)}"
            for q in qs) + " |")
    L.append("| **mean** | " + " | ".join(f"{_f(ph['mean_rel_error'][q], pct=True)}" for q in qs) + " |")
    L.append("| **worst user** | " + " | ".join(f"{_f(ph['max_rel_error'][q], pct=True)}" for q in qs) + " |")
    return L + [""]


def _augmentation(res: dict[str, Any]) -> list[str]:
    a = res["augmentation"]
    L = ["## Augmentation gain", "", "**Protocol.** " + a["protocol"], "",
         "| k real / user | generator | real only | real + synthetic | gain (points) |",
         "| --- | --- | --- | --- | --- |"]
    for k, v in a["summary"].items():
        L.append(f"| {k} | {v['generator']} | {_f(v['acc_real']['mean'], pct=True)} ± {_f(100 * v['acc_real']['std'], 1)} | "
                 f"{_f(v['acc_augmented']['mean'], pct=True)} ± {_f(100 * v['acc_augmented']['std'], 1)} | "
                 f"{100 * v['gain']['mean']:+.1f} ± {100 * v['gain']['std']:.1f} |")
    for k in a.get("not_measured", []):
        L.append(f"| {k} | not measured: needs `--fewshot` (the evaluated pipeline saw every train recording) | | | |")
    return L + [""]


def _sweep(res: dict[str, Any]) -> list[str]:
    sw = res["sweep"]
    L = ["## Sampler sweep", "", sw["note"], "",
         "| scheduler | steps | guidance | N | affinity | FD (N) | FD (N small) | s / sample |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sw["rows"]:
        fd = _f(r["fd"], 2) if r["n"] > r["n_small"] else "—"
        L.append(f"| {r['scheduler']} | {r['steps']} | {r['guidance']} | {r['n']} | {_f(r['affinity'], pct=True)} | "
                 f"{fd} | {_f(r['fd_small'], 2)} (N={r['n_small']}) | {_f(r['seconds_per_sample'], 3)} |")
    if sw.get("conclusion"):
        L += ["", sw["conclusion"]]
    return L + [""]


def _appendix(res: dict[str, Any]) -> list[str]:
    """Optional follow-up notes (res["appendix"]: a title and lines), clearly apart from the measured run."""
    a = res.get("appendix")
    return ["## " + a["title"], "", *a["lines"], ""] if a else []


_SECTIONS = dict(reconstruction=_reconstruction, gan=_gan, fidelity=_fidelity, physics=_physics,
                 augmentation=_augmentation, sweep=_sweep, appendix=_appendix)
