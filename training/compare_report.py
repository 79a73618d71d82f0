"""What `dopplergen compare` concludes and writes: one row of numbers per route, the verdict per metric,
compare.md and its figures. The measuring (training, evaluating, timing) is in training/compare.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.eval.plots import metric_bars, spectrogram_grid

# (key in the row, label, higher is better?, tie tolerance); a tolerance below 1 in a row marked "rel" is
# relative: timings on a shared CPU wobble by a few per cent, so 5% apart counts as a tie.
METRICS = (
    ("psnr_db", "reconstruction PSNR (dB)", True, 0.1),
    ("ssim", "reconstruction SSIM", True, 0.005),
    ("affinity_ratio", "affinity / real-test accuracy", True, 0.01),
    ("tstr_ratio", "TSTR / TRTR", True, 0.01),
    ("gain_all", "augmentation gain, k = all (points)", True, 0.5),
    ("fd", "Fréchet distance to real test", False, 0.05),
    ("c2st", "two-sample test accuracy (0.5 = indistinguishable)", False, 0.01),
    ("physics_max", "physics: worst mean relative error", False, 0.005),
    ("s_per_sample", "sampling s / sample, default steps", False, "5%"),
    ("s_per_sample_fast", "sampling s / sample, fewest steps at equal quality", False, "5%"),
    ("size_mb", "pipeline weights (MB)", False, 0.01),
)



def fewest_steps(res: dict[str, Any]) -> int:
    """From the evaluate sweep: the fewest steps of the route's own sampler that keep affinity within 2 points
    and FD within 15% of its default-steps result (the sweep's 'equal quality'); the default when not
    measured."""
    steps, sched = res["settings"]["steps"], res["settings"]["scheduler"]
    rows = sorted((r for r in res.get("sweep", {}).get("rows", [])
                   if r["kind"] == "sampler" and r["scheduler"] == sched), key=lambda r: r["steps"])
    ref = next((r for r in rows if r["steps"] == steps), None)
    if ref is None:
        return int(steps)
    ok = [r for r in rows if r["affinity"] >= ref["affinity"] - 0.02 and r["fd"] <= 1.15 * ref["fd"]]
    return int(ok[0]["steps"]) if ok else int(steps)


def row_of(route: str, res: dict[str, Any]) -> dict[str, Any]:
    gain = res["augmentation"]["summary"].get("all", {}).get("gain", {})
    phys = res.get("physics", {}).get("mean_rel_error") or {}  # empty when the dataset has no radar axes
    return dict(
        route=route, version=res["pipeline"]["version"],
        psnr_db=res["reconstruction"]["psnr_db"], ssim=res["reconstruction"]["ssim"],
        codebook=res["reconstruction"].get("codebook"),
        affinity_ratio=res["gan"]["affinity_ratio"], tstr_ratio=res["gan"]["tstr_ratio"],
        affinity=res["gan"]["affinity"], tstr=res["gan"]["tstr"], trtr=res["gan"]["trtr"],
        gain_all=100 * gain["mean"] if gain else None,
        gain_all_std=100 * gain.get("std", 0.0) if gain else None,
        fd=res["fidelity"]["fd_generated_test"], fd_train_test=res["fidelity"]["fd_train_test"],
        c2st=res["fidelity"]["c2st"]["accuracy"], c2st_ae=res["fidelity"].get("c2st_vae", {}).get("accuracy"),
        physics=phys, physics_max=max(phys.values()) if phys else None,
        steps=res["settings"]["steps"], guidance=res["settings"]["guidance"],
        scheduler=res["settings"]["scheduler"],
        eval_runtime_s=res["runtime_s"], sweep_conclusion=res.get("sweep", {}).get("conclusion", ""),
    )


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: the best route, or a tie when the best two are within the metric's tolerance."""
    out = []
    for key, label, higher, tol in METRICS:
        vals = [(r[key], r["route"]) for r in rows if r.get(key) is not None]
        if len(vals) < 2:
            continue
        vals.sort(key=lambda v: -v[0] if higher else v[0])
        (best, who), (second, _) = vals[0], vals[1]
        limit = abs(best) * float(tol.rstrip("%")) / 100 if isinstance(tol, str) else tol
        tied = [w for v, w in vals if abs(v - best) <= limit]
        out.append(dict(metric=label, key=key, best=who if len(tied) == 1 else None,
                        tied=tied if len(tied) > 1 else [],
                        values={w: v for v, w in vals}, margin=abs(best - second)))
    return out


# ---- report ------------------------------------------------------------------------------------------------
def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "—"
    if key in ("s_per_sample", "s_per_sample_fast"):
        return f"{v:.3f}"
    if key in ("gain_all",):
        return f"{v:+.1f}"
    if key in ("psnr_db", "fd", "size_mb"):
        return f"{v:.2f}"
    return f"{v:.3f}"


def write_markdown(path: Path, cmp: dict[str, Any], fig_rel: str) -> None:
    rows = cmp["rows"]
    routes = [r["route"] for r in rows]
    lines = [f"# KL vs VQ latent spaces on micro-Doppler: `dopplergen compare` ({cmp['preset']} preset)", "",
             f"Data `{cmp['data']}`, created {cmp['created']}, total run time {cmp['runtime_s'] / 60:.0f} "
             "min (training not included when the pipelines already existed). Every route: the same data, "
             "preset and training budget; evaluated by `dopplergen evaluate` with the same flags "
             f"(`{' '.join(cmp['evaluate_flags']) or 'defaults'}`).", "",
             "| metric | " + " | ".join(f"`{r}`" for r in routes) + " | better |",
             "|---|" + "---|" * len(routes) + "---|"]
    best = {v["key"]: v for v in cmp["verdicts"]}
    for key, label, higher, _ in METRICS:
        cells = []
        for r in rows:
            txt = _fmt(key, r.get(key))
            if key == "gain_all" and r.get("gain_all_std") is not None:
                txt += f" ± {r['gain_all_std']:.1f}"
            v = best.get(key)
            if v and (v["best"] == r["route"]):
                txt = f"**{txt}**"
            cells.append(txt)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'higher' if higher else 'lower'} |")
    lines += ["", "Also measured:", ""]
    for r in rows:
        extra = [f"sampler {r['scheduler']} {r['steps']} steps, guidance {r['guidance']}",
                 f"affinity {100 * r['affinity']:.1f}% vs real test {100 * r['trtr']:.1f}%",
                 f"TSTR {100 * r['tstr']:.1f}%", f"FD real train vs test {r['fd_train_test']:.2f}",
                 f"fewest steps at equal quality {r['fast_steps']}",
                 "physics " + (", ".join(f"{k} {100 * v:.1f}%" for k,
                                         v in r["physics"].items()) or "not measured")]
        if r.get("c2st_ae") is not None:
            extra.append(f"two-sample accuracy of the autoencoder's own reconstructions {r['c2st_ae']:.3f}")
        if r.get("codebook"):
            cb = r["codebook"]
            extra.append(f"codebook perplexity {cb['perplexity']:.0f} of {cb['num_codes']} codes, "
                         f"{100 * cb['dead_fraction']:.0f}% unused on the test split")
        p = r["parameters"]
        extra.append(f"parameters: autoencoder {p['autoencoder'] / 1e6:.2f} M, denoiser "
                     f"{p['denoiser'] / 1e6:.2f} M")
        lines.append(f"- `{r['route']}` ({r['version']}): " + "; ".join(extra) + ".")
    lines += ["", "## Verdict per metric (from the numbers above only)", ""]
    for v in cmp["verdicts"]:
        if v["best"]:
            lines.append(f"- {v['metric']}: **{v['best']}** (by {v['margin']:.3g}).")
        else:
            lines.append(f"- {v['metric']}: tie between {', '.join(v['tied'])} "
                         "(within the metric's tolerance).")
    lines += ["", "Sampler sweeps (each route's own evaluate report):", ""]
    lines += [f"- `{r['route']}`: {r['sweep_conclusion'] or 'not run'}" for r in rows]
    lines += ["", f"![metrics]({fig_rel}/compare_metrics.png)", "",
              f"![samples]({fig_rel}/compare_samples.png)", "",
              f"Timing: every route sampled the same batch ({cmp['timing']['batch']} samples, fixed-shape "
              f"padding) {cmp['timing']['repeats']} times, interleaved, in one process; the table quotes "
              "medians. 'Equal quality' is each route's own: the fewest sweep steps that keep affinity "
              "within 2 points and FD within 15% of its default-steps result.", "",
              "Per-route reports: " + ", ".join(f"[{r}]({fig_rel}/eval-{r}/report.md)" for r in routes)
              + f" (copies of `{cmp['out']}/eval-<route>/`)."]
    path.write_text("\n".join(lines) + "\n")


def figures(cmp: dict[str, Any], pipes: dict[str, Any], data_path: str, fig_dir: Path) -> None:
    """compare_metrics.png (a bar chart per metric) and compare_samples.png (one real, then one sample per
    route)."""
    import numpy as np

    from models.sampling import sample
    from training.eval.context import load_data

    fig_dir.mkdir(parents=True, exist_ok=True)
    rows = cmp["rows"]
    metric_bars(rows, [m for m in METRICS if m[0] not in ("s_per_sample_fast",)],
                fig_dir / "compare_metrics.png")

    data = load_data(data_path, next(iter(pipes.values())), print)
    users = data.users[:6]
    real = [data.test_x[np.flatnonzero(data.test_y == data.users.index(u))[0]] for u in users]
    grid = [("real", real)]
    for r in rows:
        pipe = pipes[r["route"]]
        x = sample(pipe, [pipe.user_encoder.index_of(u) for u in users], [7] * len(users),
                   num_inference_steps=r["steps"], guidance_scale=r["guidance"], sampler=r["scheduler"])
        grid.append((r["route"], list(x.numpy())))
    spectrogram_grid(grid, data.meta, fig_dir / "compare_samples.png",
                     title="one real test recording, then one sample per route (seed 7), for "
                           f"{', '.join(users)}")
