"""`dopplergen compare`: the KL route against the two VQ routes, trained on the same data and budget, side by side.

Rombach et al. (2022) compared KL- and VQ-regularised latent spaces for latent diffusion; the user's notes ask
the same question for micro-Doppler (MISSION.md, priority 2). For each route this command trains (or takes)
a pipeline with the standard CLIs, evaluates it with `dopplergen evaluate` at identical settings, times
sampling for all routes in one process, and writes compare.json, compare.md and figures:

- kl            AutoencoderKL + UNet latent diffusion (the main line);
- vq-latent     VQModel + the same UNet on pre-quantisation latents (LDM "VQ-reg": isolates the latent space);
- vq-diffusion  VQModel + VQ-Diffusion Transformer over code indices (isolates the diffusion type, given VQ).

Every stage is skipped when its output already exists, so an interrupted comparison resumes where it stopped,
and stages can be run by hand in parallel into the same --out folder first (docs/compare.md shows how).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

ROUTES = ("kl", "vq-latent", "vq-diffusion")
STAGE1 = {"kl": "kl", "vq-latent": "vq", "vq-diffusion": "vq"}  # route -> train-vae --autoencoder
STAGE2 = {"kl": "train-unet", "vq-latent": "train-unet", "vq-diffusion": "train-transformer"}

# (key in the row, label, higher is better?, tie tolerance); a tolerance below 1 in a row marked "rel" is relative:
# timings on a shared CPU wobble by a few per cent, so 5% apart counts as a tie.
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder with train and test splits (e.g. data/sim10)")
    p.add_argument("--out", required=True, help="work folder: <route>/ pipelines, *-vae/ runs, eval-<route>/ reports")
    p.add_argument("--preset", default="demo", help="architecture preset for every route (default demo)")
    p.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated subset of {','.join(ROUTES)}")
    for route in ROUTES:
        p.add_argument(f"--{route}", dest=route.replace("-", "_"), default=None, metavar="PIPELINE",
                       help=f"take this {route} pipeline folder instead of training one")
    p.add_argument("--vae-steps", type=int, default=None, help="stage-1 optimiser steps (default: the preset's)")
    p.add_argument("--stage2-steps", type=int, default=None, help="stage-2 optimiser steps (default: the preset's)")
    p.add_argument("--train-args", default="", help="extra flags for every training stage, e.g. '--batch-size 4'")
    p.add_argument("--quick", action="store_true", help="evaluate with --quick (a smoke test, not a measurement)")
    p.add_argument("--evaluate-args", default="", help="extra flags for every `dopplergen evaluate`, e.g. '--seeds 2'")
    p.add_argument("--timing-batch", type=int, default=16, help="batch of the side-by-side sampling timing")
    p.add_argument("--timing-repeats", type=int, default=3, help="timed repeats per route and setting (median)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--jobs", type=int, default=1,
                   help="run up to this many training stages / evaluations at once, as subprocesses logging to "
                        "<out>/logs/ (each with --threads or 1 thread); 1 = one after another in this process")
    p.add_argument("--markdown", default=None,
                   help="also write the report here (figures are copied next to it), e.g. docs/compare-demo.md")


# ---- stages -------------------------------------------------------------------------------------------------
def run_commands(cmds: list[tuple[str, list[str]]], args: argparse.Namespace, out: Path) -> None:
    """Run `dopplergen` commands: in this process one by one (--jobs 1), or as up to --jobs subprocesses at once,
    each logging to <out>/logs/<name>.log; any failure stops the comparison with the log's tail."""
    import subprocess
    import sys

    from training.cli import main as cli

    if args.jobs <= 1:
        for _, argv in cmds:
            print("$ dopplergen " + shlex.join(argv), flush=True)
            if cli(argv):
                raise SystemExit(f"dopplergen {argv[0]} failed")
        return
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 1)}
    pending, running = list(cmds), []
    while pending or running:
        while pending and len(running) < args.jobs:
            name, argv = pending.pop(0)
            log = out / "logs" / f"{name}.log"
            print(f"$ dopplergen {shlex.join(argv)}  > {log}", flush=True)
            with log.open("w") as fh:  # the child keeps its own copy of the descriptor
                proc = subprocess.Popen([sys.executable, "-m", "training", *argv], env=env, stdout=fh,
                                        stderr=subprocess.STDOUT)
            running.append((name, log, proc))
        time.sleep(1.0)
        for item in list(running):
            name, log, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode:
                for _, _, other in running:
                    other.terminate()
                tail = log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name} failed (exit {proc.returncode}); end of {log}:\n{tail}")
            print(f"compare: {name} done", flush=True)


def pipeline_dirs(routes: list[str], args: argparse.Namespace, out: Path) -> dict[str, Path]:
    """Each route's pipeline folder: taken as given, found from an earlier run, or trained now. Stage 1 runs first
    (one VQModel serves both VQ routes), then every missing stage 2; a stage with resume checkpoints resumes."""
    dirs, todo = {}, []
    for route in routes:
        given = getattr(args, route.replace("-", "_"))
        dirs[route] = Path(given) if given else out / route
        if given or (dirs[route] / "dopplergen.json").is_file():
            print(f"compare: {route}: taking the existing pipeline {dirs[route]}")
        else:
            todo.append(route)
    extra = shlex.split(args.train_args)

    def resume(run: Path) -> list[str]:
        return ["--resume", "latest"] if (run / "checkpoints").is_dir() else []

    stage1 = []
    for kind in dict.fromkeys(STAGE1[r] for r in todo):  # ordered, unique
        run = out / f"{kind}-vae"
        if not (run / "vae" / "config.json").is_file():
            stage1.append((f"train-vae-{kind}", [
                "train-vae", "--preset", args.preset, "--autoencoder", kind, "--data", args.data, "--out", str(run),
                *(["--max-steps", str(args.vae_steps)] if args.vae_steps else []), *resume(run), *extra]))
    run_commands(stage1, args, out)
    stage2 = []
    for route in todo:
        run = out / f"{route}-run"
        stage2.append((f"{STAGE2[route]}-{route}", [
            STAGE2[route], "--preset", args.preset, "--data", args.data, "--vae", str(out / f"{STAGE1[route]}-vae" / "vae"),
            "--out", str(dirs[route]), "--run-dir", str(run), "--name", f"dopplergen-{args.preset}-{route}",
            *(["--max-steps", str(args.stage2_steps)] if args.stage2_steps else []), *resume(run), *extra]))
    run_commands(stage2, args, out)
    return dirs


def evaluate_routes(dirs: dict[str, Path], args: argparse.Namespace, out: Path) -> dict[str, dict[str, Any]]:
    """`dopplergen evaluate` of every route at the shared settings; a report of the same pipeline and flags is reused."""
    from training.generate import pipeline_fingerprint

    flags = (["--quick"] if args.quick else []) + shlex.split(args.evaluate_args)  # what the numbers depend on
    threads = ["--threads", str(args.threads)] if args.threads else []
    todo = []
    for route, pipe_dir in dirs.items():
        report = out / f"eval-{route}" / "report.json"
        if report.is_file():
            res = json.loads(report.read_text())
            same = (res["pipeline"]["fingerprint"] == pipeline_fingerprint(pipe_dir)
                    and res["data"]["path"] == str(args.data) and res.get("compare_flags") == flags)
            if same:
                print(f"compare: {route}: reusing {report}")
                continue
        todo.append((f"evaluate-{route}", ["evaluate", "--pipeline", str(pipe_dir), "--data", args.data,
                                           "--out", str(report.parent), *flags, *threads]))
    run_commands(todo, args, out)
    reports = {}
    for route in dirs:
        report = out / f"eval-{route}" / "report.json"
        res = json.loads(report.read_text())
        if res.get("compare_flags") != flags:
            res["compare_flags"] = flags  # what made this report, so a rerun with other flags re-evaluates
            report.write_text(json.dumps(res, indent=2) + "\n")
        reports[route] = res
    return reports


# ---- measurements made here --------------------------------------------------------------------------------------
def fewest_steps(res: dict[str, Any]) -> int:
    """From the evaluate sweep: the fewest steps of the route's own sampler that keep affinity within 2 points and
    FD within 15% of its default-steps result (the sweep's 'equal quality'); the default when not measured."""
    steps, sched = res["settings"]["steps"], res["settings"]["scheduler"]
    rows = sorted((r for r in res.get("sweep", {}).get("rows", [])
                   if r["kind"] == "sampler" and r["scheduler"] == sched), key=lambda r: r["steps"])
    ref = next((r for r in rows if r["steps"] == steps), None)
    if ref is None:
        return int(steps)
    ok = [r for r in rows if r["affinity"] >= ref["affinity"] - 0.02 and r["fd"] <= 1.15 * ref["fd"]]
    return int(ok[0]["steps"]) if ok else int(steps)


def time_sampling(pipes: dict[str, Any], settings: dict[str, list[tuple[int, float, str]]], batch: int,
                  repeats: int) -> dict[str, list[float]]:
    """Seconds per sample, every route and setting timed in the same process, repeats interleaved across routes
    (so a load change on a shared machine hits all of them alike). One untimed warm-up call each."""
    from models.sampling import sample

    times: dict[tuple[str, int], list[float]] = {}
    for rep in range(-1, repeats):
        for route, pipe in pipes.items():
            users = [i % len(pipe.users) for i in range(batch)]
            for steps, guidance, scheduler in settings[route]:
                t0 = time.perf_counter()
                sample(pipe, users, list(range(batch)), num_inference_steps=steps, guidance_scale=guidance,
                       scheduler=scheduler, pad_to=batch)
                if rep >= 0:
                    times.setdefault((route, steps), []).append((time.perf_counter() - t0) / batch)
    return {f"{route}@{steps}": v for (route, steps), v in times.items()}


def model_size(pipe_dir: Path, pipe: Any) -> dict[str, Any]:
    files = list(pipe_dir.rglob("*.safetensors"))
    params = {name: sum(p.numel() for p in m.parameters())
              for name, m in (("autoencoder", pipe.vae), ("denoiser", pipe.denoiser), ("user_encoder", pipe.user_encoder))}
    return dict(size_mb=sum(f.stat().st_size for f in files) / 1e6, parameters=params)


def row_of(route: str, res: dict[str, Any]) -> dict[str, Any]:
    gain = res["augmentation"]["summary"].get("all", {}).get("gain", {})
    phys = res.get("physics", {}).get("mean_rel_error") or {}  # empty when the dataset has no radar axes
    return dict(
        route=route, version=res["pipeline"]["version"],
        psnr_db=res["reconstruction"]["psnr_db"], ssim=res["reconstruction"]["ssim"],
        codebook=res["reconstruction"].get("codebook"),
        affinity_ratio=res["gan"]["affinity_ratio"], tstr_ratio=res["gan"]["tstr_ratio"],
        affinity=res["gan"]["affinity"], tstr=res["gan"]["tstr"], trtr=res["gan"]["trtr"],
        gain_all=100 * gain["mean"] if gain else None, gain_all_std=100 * gain.get("std", 0.0) if gain else None,
        fd=res["fidelity"]["fd_generated_test"], fd_train_test=res["fidelity"]["fd_train_test"],
        c2st=res["fidelity"]["c2st"]["accuracy"], c2st_ae=res["fidelity"].get("c2st_vae", {}).get("accuracy"),
        physics=phys, physics_max=max(phys.values()) if phys else None,
        steps=res["settings"]["steps"], guidance=res["settings"]["guidance"], scheduler=res["settings"]["scheduler"],
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
        out.append(dict(metric=label, key=key, best=who if len(tied) == 1 else None, tied=tied if len(tied) > 1 else [],
                        values={w: v for v, w in vals}, margin=abs(best - second)))
    return out


# ---- report -------------------------------------------------------------------------------------------------
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
             f"Data `{cmp['data']}`, created {cmp['created']}, total run time {cmp['runtime_s'] / 60:.0f} min "
             f"(training not included when the pipelines already existed). Every route: the same data, preset and "
             f"training budget; evaluated by `dopplergen evaluate` with the same flags "
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
                 "physics " + (", ".join(f"{k} {100 * v:.1f}%" for k, v in r["physics"].items()) or "not measured")]
        if r.get("c2st_ae") is not None:
            extra.append(f"two-sample accuracy of the autoencoder's own reconstructions {r['c2st_ae']:.3f}")
        if r.get("codebook"):
            cb = r["codebook"]
            extra.append(f"codebook perplexity {cb['perplexity']:.0f} of {cb['num_codes']} codes, "
                         f"{100 * cb['dead_fraction']:.0f}% unused on the test split")
        p = r["parameters"]
        extra.append(f"parameters: autoencoder {p['autoencoder'] / 1e6:.2f} M, denoiser {p['denoiser'] / 1e6:.2f} M")
        lines.append(f"- `{r['route']}` ({r['version']}): " + "; ".join(extra) + ".")
    lines += ["", "## Verdict per metric (from the numbers above only)", ""]
    for v in cmp["verdicts"]:
        if v["best"]:
            lines.append(f"- {v['metric']}: **{v['best']}** (by {v['margin']:.3g}).")
        else:
            lines.append(f"- {v['metric']}: tie between {', '.join(v['tied'])} (within the metric's tolerance).")
    lines += ["", "Sampler sweeps (each route's own evaluate report):", ""]
    lines += [f"- `{r['route']}`: {r['sweep_conclusion'] or 'not run'}" for r in rows]
    lines += ["", f"![metrics]({fig_rel}/compare_metrics.png)", "",
              f"![samples]({fig_rel}/compare_samples.png)", "",
              "Timing: every route sampled the same batch "
              f"({cmp['timing']['batch']} samples, fixed-shape padding) {cmp['timing']['repeats']} times, interleaved, "
              "in one process; the table quotes medians. 'Equal quality' is each route's own: the fewest sweep steps "
              "that keep affinity within 2 points and FD within 15% of its default-steps result.", "",
              "Per-route reports: " + ", ".join(f"[{r}]({fig_rel}/eval-{r}/report.md)" for r in routes)
              + f" (copies of `{cmp['out']}/eval-<route>/`)."]
    path.write_text("\n".join(lines) + "\n")


def figures(cmp: dict[str, Any], pipes: dict[str, Any], data_path: str, fig_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from models.sampling import sample
    from training.preview import PNG_METADATA, spectrogram_grid

    fig_dir.mkdir(parents=True, exist_ok=True)
    rows = cmp["rows"]
    keys = [m for m in METRICS if m[0] not in ("s_per_sample_fast",)]
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(2.3 * ((len(keys) + 1) // 2), 5.2), squeeze=False)
    colours = {"kl": "tab:blue", "vq-latent": "tab:orange", "vq-diffusion": "tab:green"}
    for ax, (key, label, higher, _) in zip(axes.flat, keys, strict=False):
        vals = [r.get(key) for r in rows]
        ax.bar(range(len(rows)), [v if v is not None else 0 for v in vals],
               color=[colours.get(r["route"], "grey") for r in rows])
        ax.set_xticks(range(len(rows)), [r["route"] for r in rows], rotation=30, fontsize=7)
        ax.set_title(f"{label}\n({'higher' if higher else 'lower'} is better)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(fig_dir / "compare_metrics.png", dpi=90, metadata=PNG_METADATA)
    plt.close(fig)

    from training.evaluate_sections import load_data

    data = load_data(data_path, next(iter(pipes.values())), print)
    users = data.users[:6]
    real = [data.test_x[np.flatnonzero(data.test_y == data.users.index(u))[0]] for u in users]
    grid = [("real", real)]
    for r in rows:
        pipe = pipes[r["route"]]
        x = sample(pipe, [pipe.user_encoder.index_of(u) for u in users], [7] * len(users),
                   num_inference_steps=r["steps"], guidance_scale=r["guidance"], scheduler=r["scheduler"])
        grid.append((r["route"], list(x.numpy())))
    spectrogram_grid(grid, data.meta, fig_dir / "compare_samples.png",
                     title=f"one real test recording, then one sample per route (seed 7), for {', '.join(users)}")


def run(args: argparse.Namespace) -> int:
    import torch

    from models.pipeline import DopplerPipeline

    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    bad = [r for r in routes if r not in ROUTES]
    if bad or len(routes) < 2:
        raise SystemExit(f"--routes must name at least two of {list(ROUTES)}; got {routes}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pipe_dirs = pipeline_dirs(routes, args, out)
    reports = evaluate_routes(pipe_dirs, args, out)

    pipes = {route: DopplerPipeline.load(pipe_dirs[route]) for route in routes}
    rows = [row_of(route, reports[route]) for route in routes]
    settings = {}
    for r in rows:
        r["fast_steps"] = fewest_steps(reports[r["route"]])
        settings[r["route"]] = sorted({(r["steps"], r["guidance"], r["scheduler"]),
                                       (r["fast_steps"], r["guidance"], r["scheduler"])})
    print(f"compare: timing sampling, batch {args.timing_batch} x {args.timing_repeats} repeats per setting", flush=True)
    timed = time_sampling(pipes, settings, args.timing_batch, args.timing_repeats)
    for r in rows:
        r["s_per_sample"] = statistics.median(timed[f"{r['route']}@{r['steps']}"])
        r["s_per_sample_fast"] = statistics.median(timed[f"{r['route']}@{r['fast_steps']}"])
        r.update(model_size(pipe_dirs[r["route"]], pipes[r["route"]]))
    cmp = dict(preset=args.preset, data=args.data, out=str(out), routes=routes,
               pipelines={k: str(v) for k, v in pipe_dirs.items()},
               evaluate_flags=next(iter(reports.values()))["compare_flags"],
               rows=rows, verdicts=verdicts(rows),
               timing=dict(batch=args.timing_batch, repeats=args.timing_repeats, seconds_per_sample=timed,
                           torch_threads=torch.get_num_threads()),
               created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    figures(cmp, pipes, args.data, out / "figures")
    cmp["runtime_s"] = time.perf_counter() - t0
    (out / "compare.json").write_text(json.dumps(cmp, indent=2) + "\n")
    write_markdown(out / "compare.md", cmp, "figures")
    if args.markdown:
        md = Path(args.markdown)
        fig_dir = md.with_suffix("")  # docs/compare-demo.md -> docs/compare-demo/
        fig_dir.mkdir(parents=True, exist_ok=True)
        for f in (out / "figures").glob("compare_*.png"):
            shutil.copyfile(f, fig_dir / f.name)
        for route in routes:  # each route's own evaluate report, with its figures, next to the comparison
            src, dst = out / f"eval-{route}", fig_dir / f"eval-{route}"
            (dst / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / "report.md", dst / "report.md")
            for f in (src / "figures").glob("*.png"):
                shutil.copyfile(f, dst / "figures" / f.name)
        write_markdown(md, cmp, os.path.relpath(fig_dir, md.parent))
    wins = ", ".join(f"{v['key']}: {v['best'] or 'tie'}" for v in cmp["verdicts"])
    print(f"compare: {len(routes)} routes in {cmp['runtime_s'] / 60:.1f} min | {wins} | wrote {out / 'compare.md'}")
    return 0
