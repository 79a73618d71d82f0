"""The evaluation report: headline targets, report.json, the Markdown tables and the figures (drawn by
plots.py)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from training.eval import activities_report, conditions, plots, privacy

# The headline targets the report judges a pipeline by (docs/evaluation.md says why each).
TARGETS = dict(affinity_ratio=0.90, tstr_ratio=0.80, gain_k5=0.05, c2st=0.75, physics=0.10,
               privacy_ratio=0.95, copies=0.01, membership_auc=0.55)
# A reference classifier within this many points of chance (or 2 binomial s.e. at chance, if more) has learnt
# nothing: the targets measured with classifiers (ratios of chance to chance) are then not measurable.
CHANCE_MARGIN = 0.05
BY_CLASSIFIERS = ("affinity", "TSTR", "augmentation gain", "two-sample")


def at_chance(res: dict[str, Any]) -> dict[str, float] | None:
    """{trtr, chance, margin} when the reference classifier is within `margin` of chance, else None."""
    trtr, users, n = (res.get("gan") or {}).get("trtr"), res["data"].get("users") or [], res["data"].get(
        "n_test")
    if trtr is None or len(users) < 2:
        return None
    chance = 1.0 / len(users)
    margin = max(CHANCE_MARGIN, 2 * math.sqrt(chance * (1 - chance) / n) if n else 0.0)
    return dict(trtr=trtr, chance=chance, margin=margin) if trtr - chance < margin else None


def _f(v: Any, nd: int = 3, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.{nd}f}"


# ---- markdown ----------------------------------------------------------------------------------------------
def markdown(res: dict[str, Any], figures: str = "figures") -> str:
    """The human report: headline table against targets, then one section per metric family.

    `figures` is the figure folder relative to where the Markdown file is written.
    """
    L: list[str] = []
    p, d, s = res["pipeline"], res["data"], res["settings"]
    L += [f"# Evaluation report: {p['name']} {p['version']}", ""]
    L += [f"- pipeline: `{p['path']}` (fingerprint `{p['fingerprint']}`), trained on dataset fingerprint "
          f"`{p.get('dataset_fingerprint')}`",
          f"- data: `{d['path']}` (fingerprint `{d['fingerprint']}`; {d['n_train']} train / {d['n_test']} "
          f"test recordings, {len(d['users'])} "
          f"users){'' if d['matches_pipeline'] else ' — **not the dataset the pipeline was trained on**'}",
          f"- sampling: {s['scheduler']} {s['steps']} steps, guidance {s['guidance']}, {s['gen_per_user']} "
          f"generated per user; mode: {'quick' if s['quick'] else 'full'}; device {s['device']}",
          f"- evaluation run time: {res['runtime_s']:.0f} s", ""]
    L += ["## Headline metrics against targets", "", "| metric | measured | target | met | margin |",
          "| --- | --- | --- | --- | --- |"]
    if chance := at_chance(res):
        L += [f"**Not evidence.** The reference classifier is at chance (real test accuracy "
              f"{_f(chance['trtr'], pct=True)} against {_f(chance['chance'], pct=True)} for "
              f"{len(d['users'])} people, within {100 * chance['margin']:.0f} points): the targets measured "
              "with classifiers are not measurable in this run. Use more data or the full evaluation.", ""]
    for t in res["targets"]:
        met = ("not measurable" if t.get("measurable") is False
               else "n/a" if t["pass"] is None else ("yes" if t["pass"] else "**no**"))
        L.append(f"| {t['name']} | {t['display']} | {t['op']} {t['target_display']} | {met} | "
                 f"{t.get('margin', '')} |")
    L += ["", f"![headline metrics]({figures}/metrics.png)", ""]
    pictures = dict(gan=("real test vs generated, per user", "real_vs_generated.png"),
                    augmentation=("augmentation gain", "augmentation.png"),
                    sweep=("sampler sweep", "sampler_sweep.png"))
    for section in ("reconstruction", "gan", "fidelity", "physics", "conditions", "augmentation",
                    "sweep", "privacy", "appendix"):
        if section == "privacy":
            L += privacy.markdown(res, figures)
            L += activities_report.markdown(res, figures)
            continue
        if section == "conditions":
            L += conditions.markdown(res["conditions"], figures) if "conditions" in res else []
            continue
        # --targets: few-shot (and --baselines) on the targets; --ood-targets: another domain's people
        for key, kw in (("ood", {}), ("ood_other", {"title": OOD_TITLE})):
            if section == "sweep" and key in res:
                from training.eval import ood

                L += [*ood.markdown(res[key], figures, **kw).splitlines(), ""]
        if section == "sweep" and "baselines" in res:
            from training.eval import baselines_report

            L += baselines_report.markdown(res["baselines"], figures)
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
            "| affinity: trained on real train, tested on generated (labelled with the requested user) | "
            f"{_f(g['affinity'], pct=True)} | real test {_f(g['trtr'], pct=True)} | "
            f"{_f(g['affinity_ratio'])} |",
            f"| TSTR: trained on generated only, tested on real test | {_f(g['tstr'], pct=True)} | TRTR "
            f"{_f(g['trtr'], pct=True)} | {_f(g['tstr_ratio'])} |", ""]


def _fidelity(res: dict[str, Any]) -> list[str]:
    f = res["fidelity"]
    c = f["c2st"]
    bank = c.get("texture_bank", 0)
    vae_row = (["The same test on the VAE's own reconstructions of real train recordings (no diffusion at "
                f"all) gives **{_f(f['c2st_vae']['accuracy'])}**: "
                + ("what decoding alone gives, without the texture bank." if bank else
                   "the floor for any generator that decodes through this VAE.")
                + (f" ({f['c2st_vae']['note']})" if f["c2st_vae"].get("note") else ""), ""]
               if f.get("c2st_vae") else [])
    tex_row = (["The generated samples carry the pipeline's texture bank: each decoded sample gets the "
                f"residual (recording minus its reconstruction) of the best-fitting of {bank} train "
                "recordings (models/texture.py).", ""] if bank else [])
    return ["## Fidelity distances", "",
            f"Fréchet distance in the reference classifier's {f['feature_dim']}-d feature space, {f['n']} vs "
            f"{f['n']} recordings (sample counts matched, since the estimate is biased by N).", "",
            "| pair | Fréchet distance |", "| --- | --- |",
            f"| generated vs real test | {_f(f['fd_generated_test'], 2)} |",
            f"| real train vs real test (the scale: two real draws) | {_f(f['fd_train_test'], 2)} |",
            f"| ratio | {_f(f['fd_ratio'], 2)} |", "",
            f"Classifier two-sample test ({c['classifier']}): held-out accuracy **{_f(c['accuracy'])}** on "
            f"{c['n_test']} recordings (±{_f(c['stderr'])} binomial s.e. at chance; 0.5 = indistinguishable, "
            "1.0 = always told apart).", "", *tex_row, *vae_row]


def _physics(res: dict[str, Any]) -> list[str]:
    ph = res["physics"]
    qs = list(ph["mean_rel_error"])
    L = ["## Physics consistency", "", ph["method"], "",
         "| user | " + " | ".join(f"{q} real / gen / rel. err." for q in qs) + " |",
         "| --- |" + " --- |" * len(qs)]
    for u, row in ph["per_user"].items():
        L.append(f"| {u} | " + " | ".join(
            f"{_f(row[q]['real_median'], 2)} / {_f(row[q]['generated_median'], 2)} / "
            f"{_f(row[q]['rel_error'], pct=True)}"
            for q in qs) + " |")
    L.append("| **mean** | " + " | ".join(f"{_f(ph['mean_rel_error'][q], pct=True)}" for q in qs) + " |")
    L.append("| **worst user** | " + " | ".join(f"{_f(ph['max_rel_error'][q], pct=True)}" for q in qs) + " |")
    return L + [""]


def _augmentation(res: dict[str, Any]) -> list[str]:
    a = res["augmentation"]
    L = ["## Augmentation gain", "", "**Protocol.** " + a["protocol"], "",
         "| k real / user | generator | seeds | real only | real + synthetic | gain (points) | gain, 95% CI "
         "|",
         "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, v in a["summary"].items():
        ci = v.get("gain_ci95") or {}
        ci_s = (f"[{100 * ci['lo']:+.1f}, {100 * ci['hi']:+.1f}]"
                if ci.get("lo") is not None and ci.get("n", 0) > 1 else "n/a")
        L.append(f"| {k} | {v['generator']} | {v['gain']['n']} | {_f(v['acc_real']['mean'], pct=True)} ± "
                 f"{_f(100 * v['acc_real']['std'], 1)} | {_f(v['acc_augmented']['mean'], pct=True)} ± "
                 f"{_f(100 * v['acc_augmented']['std'], 1)} | {100 * v['gain']['mean']:+.1f} ± "
                 f"{100 * v['gain']['std']:.1f} | {ci_s} |")
    ood = res.get("ood") or {}
    on_targets = set(_targets_summary(res))
    for k in a.get("not_measured", []):
        why = ("not measured: needs `--fewshot` (the evaluated pipeline saw every train recording)" if not ood
               else f"on people the pipeline never saw instead (`--targets {ood['targets']}`, next section)"
               if k in on_targets else "not measured: `--targets` runs k = 5 unless `--k` names others")
        L.append(f"| {k} | {why} | | | | | |")
    return L + [""]


OOD_TITLE = "Out of domain: another radar's people"


def _targets_summary(res: dict[str, Any], key: str = "ood", label: str = "as given") -> dict[str, Any]:
    """Per k, the few-shot summary on --targets' people (`key` "ood_other": --ood-targets'), from the
    pipeline `label` ("as given", "adapted"); {} where that was not run."""
    return (((res.get(key) or {}).get("runs") or {}).get(label) or {}).get("summary", {})


def _sweep(res: dict[str, Any]) -> list[str]:
    sw = res["sweep"]
    L = ["## Sampler sweep", "", sw["note"], "",
         "| scheduler | steps | guidance | N | affinity | FD (N) | FD (N small) | s / sample |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sw["rows"]:
        fd = _f(r["fd"], 2) if r["n"] > r["n_small"] else "—"
        L.append(f"| {r['scheduler']} | {r['steps']} | {r['guidance']} | {r['n']} | "
                 f"{_f(r['affinity'], pct=True)} | {fd} | {_f(r['fd_small'], 2)} (N={r['n_small']}) | "
                 f"{_f(r['seconds_per_sample'], 3)} |")
    if sw.get("conclusion"):
        L += ["", sw["conclusion"]]
    return L + [""]


def _appendix(res: dict[str, Any]) -> list[str]:
    """Optional follow-up notes (res["appendix"]: a title and lines), clearly apart from the measured run."""
    a = res.get("appendix")
    return ["## " + a["title"], "", *a["lines"], ""] if a else []


_SECTIONS = dict(reconstruction=_reconstruction, gan=_gan, fidelity=_fidelity, physics=_physics,
                 augmentation=_augmentation, sweep=_sweep, appendix=_appendix)


# ---- targets and report files ------------------------------------------------------------------------------
def targets(res: dict[str, Any], tg: dict[str, float]) -> list[dict[str, Any]]:
    """Headline metrics against their fixed targets; pass None when a metric was not measured."""
    out, weak = [], at_chance(res)

    def add(name, value, target, op, pct=False, points=False):
        ok = (None if value is None or not math.isfinite(value)
              else (value >= target if op == ">=" else value <= target))
        if weak and name.startswith(BY_CLASSIFIERS):  # measured, but by a classifier that learnt nothing
            ok = None
        fmt = ((lambda v: f"{100 * v:+.1f} points") if points
               else ((lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:.3f}")))
        margin = "" if ok is None else (f"{100 * (value - target):+.1f} points" if (points or pct)
                                        else f"{value - target:+.3f}")
        out.append(dict(name=name, value=value, target=target, op=op, pass_=ok,
                        display="n/a" if ok is None else fmt(value),
                        target_display=fmt(target), margin=margin))
        out[-1]["pass"] = out[-1].pop("pass_")
        if weak and name.startswith(BY_CLASSIFIERS):
            out[-1].update(measurable=False, margin="not measurable")

    g, f = res["gan"], res["fidelity"]
    add("affinity / real-test accuracy", g["affinity_ratio"], tg["affinity_ratio"], ">=")
    add("TSTR / TRTR", g["tstr_ratio"], tg["tstr_ratio"], ">=")
    k5 = res["augmentation"]["summary"].get("5", {}).get("gain", {}).get("mean")
    new_people = _targets_summary(res).get("5")
    if k5 is None and new_people:  # --targets: the k = 5 gain on the targets' people, enrolled
        add(f"augmentation gain at k=5 (people of {res['ood']['targets']})", new_people["gain"]["mean"],
            tg["gain_k5"], ">=", points=True)
    else:
        add("augmentation gain at k=5", k5, tg["gain_k5"], ">=", points=True)
    for label in ("adapted", "as given"):  # --ood-targets: issue 32's target is the gain after adapt
        s5 = _targets_summary(res, "ood_other", label).get("5")
        if s5:
            add(f"out-of-domain gain at k=5, {label} (people of {res['ood_other']['targets']})",
                s5["gain"]["mean"], tg["gain_k5"], ">=", points=True)
            break
    add("two-sample test accuracy", f["c2st"]["accuracy"], tg["c2st"], "<=")
    for q, v in res["physics"].get("mean_rel_error", {}).items():
        add(f"physics rel. error: {q} (mean over users)", v, tg["physics"], "<=", pct=True)
    for name, value, key, op in privacy.targets(res):
        add(name, value, tg[key], op, pct=key == "copies")
    for name, value, key, op in activities_report.targets(res):
        add(name, value, activities_report.TARGETS[key], op)
    return out


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_report(out: Path, res: dict[str, Any], md_path: Path | None = None) -> Path:
    """report.json in `out`; report.md in `out` or at md_path, with figure links relative to it."""
    res["figures"] = {p.name: True for p in (out / "figures").glob("*.png")}
    (out / "report.json").write_text(json.dumps(_jsonable(res), indent=2) + "\n")
    md_path = md_path or out / "report.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(
        res, figures=Path(os.path.relpath(out / "figures", md_path.parent)).as_posix()))
    return md_path


def rerender(out: Path, md_path: Path | None = None, targets_: dict[str, float] | None = None) -> Path:
    """Re-write report.md (and the metrics figure) from report.json, e.g. after a formatting fix; no
    re-measuring."""
    res = json.loads((out / "report.json").read_text())
    res["targets"] = targets(res, targets_ or TARGETS)
    plots.metrics_figure(res["targets"], out / "figures" / "metrics.png")
    return write_report(out, res, md_path)


def write_summary(pipeline: Path, out: Path, res: dict[str, Any]) -> None:
    """Headline numbers into dopplergen.json's "evaluation" field (only with --write-summary)."""
    meta_file = pipeline / "dopplergen.json"
    meta = json.loads(meta_file.read_text())
    meta["evaluation"] = _jsonable(dict(
        created=res["created"], report=str(out), data_fingerprint=res["data"]["fingerprint"],
        quick=res["settings"]["quick"], runtime_s=round(res["runtime_s"], 1),
        metrics={t["name"]: t["value"] for t in res["targets"]},
        targets_met={t["name"]: t["pass"] for t in res["targets"]},
        trtr=res["gan"]["trtr"], affinity=res["gan"]["affinity"], tstr=res["gan"]["tstr"],
        fd_generated_test=res["fidelity"]["fd_generated_test"],
        fd_train_test=res["fidelity"]["fd_train_test"],
        psnr_db=res["reconstruction"]["psnr_db"], ssim=res["reconstruction"]["ssim"]))
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def figures(ctx: Any, pool: Any, res: dict[str, Any]) -> None:
    """The report's PNGs: real vs generated per user, sampler sweep, augmentation gain, metrics against
    targets."""
    d, k = ctx.data, ctx.st.figure_per_user
    rows = [(u, [x[0] for x in d.test_x[d.test_y == i][:k]], [x[0] for x in pool.x[pool.y == i][:k]])
            for i, u in enumerate(d.users)]
    fig_dir = ctx.out / "figures"
    plots.real_vs_generated_figure(rows, d.meta, fig_dir / "real_vs_generated.png",
                                    f"real test (top) vs generated (bottom) per user; {ctx.sampler} "
                                    f"{ctx.steps} steps, guidance {ctx.guidance}")
    if res["sweep"]["rows"]:
        plots.sweep_figure(res["sweep"]["rows"], fig_dir / "sampler_sweep.png")
    if res["augmentation"]["summary"]:
        plots.augmentation_figure(res["augmentation"]["summary"], fig_dir / "augmentation.png")
    plots.metrics_figure(res["targets"], fig_dir / "metrics.png")
