"""`dopplergen compare`: the KL route against the two VQ routes, trained on the same data and budget, side by
side.

Rombach et al. (2022) compared KL- and VQ-regularised latent spaces for latent diffusion; this command asks
the same question for micro-Doppler, where the KL route is the main line and the VQ routes the experimental
alternative. For each route it trains (or takes) a pipeline with the standard CLIs, evaluates it with
`dopplergen evaluate` at identical settings, times sampling for all routes in one process, and writes
compare.json, compare.md and figures:

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

from training.cli_types import positive_int
from training.compare_report import fewest_steps, figures, row_of, verdicts, write_markdown

ROUTES = ("kl", "vq-latent", "vq-diffusion")
STAGE1 = {"kl": "kl", "vq-latent": "vq", "vq-diffusion": "vq"}  # route -> train-vae --autoencoder
STAGE2 = {"kl": "train-unet", "vq-latent": "train-unet", "vq-diffusion": "train-transformer"}

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="dataset folder with train and test splits (e.g. data/sim10)")
    p.add_argument("--out", required=True,
                   help="work folder: <route>/ pipelines, *-vae/ runs, eval-<route>/ reports")
    p.add_argument("--preset", default="demo", help="architecture preset for every route (default demo)")
    p.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated subset of {','.join(ROUTES)}")
    for route in ROUTES:
        p.add_argument(f"--{route}", dest=route.replace("-", "_"), default=None, metavar="PIPELINE",
                       help=f"take this {route} pipeline folder instead of training one")
    p.add_argument("--vae-steps", type=int, default=None,
                   help="stage-1 optimiser steps (default: the preset's)")
    p.add_argument("--stage2-steps", type=int, default=None,
                   help="stage-2 optimiser steps (default: the preset's)")
    p.add_argument("--train-args", default="",
                   help="extra flags for every training stage, e.g. '--batch-size 4'")
    p.add_argument("--quick", action="store_true",
                   help="evaluate with --quick (a smoke test, not a measurement)")
    p.add_argument("--evaluate-args", default="",
                   help="extra flags for every `dopplergen evaluate`, e.g. '--seeds 2'")
    p.add_argument("--timing-batch", type=positive_int, default=16,
                   help="batch of the side-by-side sampling timing")
    p.add_argument("--timing-repeats", type=positive_int, default=3,
                   help="timed repeats per route and setting (median)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="run up to this many training stages / evaluations at once, "
                        "as subprocesses logging to <out>/logs/ (each with --threads "
                        "or 1 thread); 1 = one after another in this process")
    p.add_argument("--markdown", default=None,
                   help="also write the report here (figures are copied next to it), e.g. "
                        "docs/compare-demo.md")


# ---- stages ------------------------------------------------------------------------------------------------
def run_in_process(argv: list[str]) -> int:
    """One stage in this process through its own module's options, as `dopplergen <stage>` would parse them
    (the modules directly, not training.cli: the CLI dispatches to this module, and a call back would be a
    cycle)."""
    from training.eval import evaluate
    from training.stages import train_transformer, train_unet, train_vae

    module = {"train-vae": train_vae, "train-unet": train_unet, "train-transformer": train_transformer,
              "evaluate": evaluate}[argv[0]]
    parser = argparse.ArgumentParser(prog=f"dopplergen {argv[0]}")
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv[1:])) or 0)


def run_commands(cmds: list[tuple[str, list[str]]], args: argparse.Namespace, out: Path) -> None:
    """Run `dopplergen` commands: in this process one by one (--jobs 1), or as up to --jobs subprocesses at
    once, each logging to <out>/logs/<name>.log; any failure stops the comparison with the log's tail."""
    import subprocess
    import sys

    if args.jobs <= 1:
        for _, argv in cmds:
            print("$ dopplergen " + shlex.join(argv), flush=True)
            if run_in_process(argv):
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
    """Each route's pipeline folder: taken as given, found from an earlier run, or trained now. Stage 1 runs
    first (one VQModel serves both VQ routes), then every missing stage 2; a stage with resume checkpoints
    resumes."""
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
                "train-vae", "--preset", args.preset, "--autoencoder", kind, "--data", args.data, "--out",
                str(run),
                *(["--max-steps", str(args.vae_steps)] if args.vae_steps else []), *resume(run), *extra]))
    run_commands(stage1, args, out)
    stage2 = []
    for route in todo:
        run = out / f"{route}-run"
        stage2.append((f"{STAGE2[route]}-{route}", [
            STAGE2[route], "--preset", args.preset, "--data", args.data, "--vae",
            str(out / f"{STAGE1[route]}-vae" / "vae"),
            "--out", str(dirs[route]), "--run-dir", str(run), "--name", f"dopplergen-{args.preset}-{route}",
            *(["--max-steps", str(args.stage2_steps)] if args.stage2_steps else []), *resume(run), *extra]))
    run_commands(stage2, args, out)
    return dirs


def evaluate_routes(dirs: dict[str, Path], args: argparse.Namespace, out: Path) -> dict[str, dict[str, Any]]:
    """`dopplergen evaluate` of every route at the shared settings; a report of the same pipeline and flags is
    reused."""
    from models.pipeline import pipeline_fingerprint

    # what the numbers depend on
    flags = (["--quick"] if args.quick else []) + shlex.split(args.evaluate_args)
    run_flags = ["--threads", str(args.threads)] if args.threads else []  # how to run, not what is measured
    # evaluations already run side by side: no worker processes
    if args.jobs > 1 and "--workers" not in flags:
        run_flags += ["--workers", "1"]
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
                                           "--out", str(report.parent), *flags, *run_flags]))
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


# ---- measurements made here --------------------------------------------------------------------------------
def time_sampling(pipes: dict[str, Any], settings: dict[str, list[tuple[int, float, str]]], batch: int,
                  repeats: int) -> dict[str, list[float]]:
    """Seconds per sample, every route and setting timed in the same process, repeats interleaved across
    routes (so a load change on a shared machine hits all of them alike). One untimed warm-up call each."""
    from models.sampling import sample

    times: dict[tuple[str, int], list[float]] = {}
    for rep in range(-1, repeats):
        for route, pipe in pipes.items():
            users = [i % len(pipe.users) for i in range(batch)]
            for steps, guidance, scheduler in settings[route]:
                t0 = time.perf_counter()
                sample(pipe, users, list(range(batch)), num_inference_steps=steps, guidance_scale=guidance,
                       sampler=scheduler, pad_to=batch)
                if rep >= 0:
                    times.setdefault((route, steps), []).append((time.perf_counter() - t0) / batch)
    return {f"{route}@{steps}": v for (route, steps), v in times.items()}


def model_size(pipe_dir: Path, pipe: Any) -> dict[str, Any]:
    files = list(pipe_dir.rglob("*.safetensors"))
    params = {name: sum(p.numel() for p in m.parameters())
              for name, m in (("autoencoder", pipe.vae), ("denoiser", pipe.denoiser),
                              ("user_encoder", pipe.user_encoder))}
    return dict(size_mb=sum(f.stat().st_size for f in files) / 1e6, parameters=params)


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
    print(f"compare: timing sampling, batch {args.timing_batch} x {args.timing_repeats} repeats per setting",
          flush=True)
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
    print(f"compare: {len(routes)} routes in {cmp['runtime_s'] / 60:.1f} min | {wins} | wrote "
          f"{out / 'compare.md'}")
    return 0
