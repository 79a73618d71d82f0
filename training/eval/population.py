"""The population generator of the few-shot protocol: a pipeline trained on a simulated population disjoint
from the evaluated users, which the few-shot adaptation (training/eval/fewshot.py) then adapts to each target
user from their k recordings.

One recipe, used by `dopplergen evaluate --fewshot` (when no --population-pipeline is given) and by
scripts/make_population.sh (`python -m training.eval.population`): the same commands and the same budget.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from models.dataset_folder import manifest_path
from models.pipeline import DopplerPipeline

# Stage-2 steps of the population generator that --fewshot trains, per preset, where it differs from the
# preset's training registry. demo: 3000 instead of 1000. Measured at k = 5 on data/sim10 (balanced mix,
# guidance 2, 3 seeds): the 20-user population at 1000 steps gave +0.3 ± 2.2 points and at 3000 steps +4.0 ±
# 1.4 (docs/evaluation.md).
POPULATION_STAGE2_STEPS = {"demo": 3000}


def population_stage2_steps(preset: str, override: int = 0) -> int:
    """Stage-2 steps for the population generator: `override` if set, else the table above (0 = the
    registry's)."""
    return int(override or POPULATION_STAGE2_STEPS.get(preset, 0))


def population_commands(out: Path, *, preset: str, size: int, carrier_ghz: float, seed: int,
                        route: str = "kl",
                        quick: bool = False, stage2_steps: int = 0, resume: bool = False,
                        cover_conditions: bool = False) -> list[list[str]]:
    """The `dopplergen` commands that build a population pipeline in out/pipeline (simulate, stage 1, stage
    2).

    20 users x 100 recordings (4 x 8 with `quick`), the preset's stage-1 budget, and `stage2_steps` (0 = the
    table above) for stage 2. `resume`: skip a simulated population that exists and continue runs that have
    checkpoints. `cover_conditions`: simulate with `--cover-conditions`, as the evaluated data was (aspect and
    speed spread).
    """
    steps = population_stage2_steps(preset, stage2_steps)
    quick_flags = ["--max-steps", "20", "--batch-size", "8"] if quick else []
    stage2_flags = ["--max-steps", str(steps)] if steps and not quick else []
    users, per_user = (4, 8) if quick else (20, 100)
    # the route of the evaluated pipeline
    stage2 = "train-transformer" if route == "vq-diffusion" else "train-unet"

    def resumed(run: Path) -> list[str]:
        return ["--resume", "latest"] if resume and (run / "checkpoints").is_dir() else []

    cmds = []
    if not (resume and manifest_path(out / "data").is_file()):
        cmds.append(["simulate", "--users", str(users), "--per-user", str(per_user), "--size", str(size),
                     "--carrier-ghz", f"{carrier_ghz:g}", "--seed", str(seed), "--preview-per-user", "0",
                     "--out", str(out / "data"), "--workers", str(max(1, min(8, (os.cpu_count() or 1) - 1))),
                     *(["--cover-conditions"] if cover_conditions else [])])
    cmds += [
        ["train-vae", "--preset", preset, "--autoencoder", "kl" if route == "kl" else "vq", "--data",
         str(out / "data"), "--out", str(out / "vae_run"), *quick_flags, *resumed(out / "vae_run")],
        [stage2, "--preset", preset, "--data", str(out / "data"), "--vae", str(out / "vae_run" / "vae"),
         "--out", str(out / "pipeline"), *stage2_flags, *quick_flags, *resumed(out / "pipeline-run")],
    ]
    return cmds


def covers_conditions(dataset_meta: dict[str, Any]) -> bool:
    """Whether a simulated dataset was made with `simulate --cover-conditions` (its variation has a speed
    span)."""
    return bool(((dataset_meta.get("simulate") or {}).get("variation") or {}).get("speed_span"))


def run_commands(cmds: list[list[str]], log: Any = print, threads: int | None = None) -> None:
    """Each command as `python -m training ...` in a subprocess (a fresh process per stage, as a user would
    run it)."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    for cmd in cmds:
        log("population: dopplergen " + " ".join(cmd))
        subprocess.run([sys.executable, "-m", "training", *cmd], check=True, env=env)


def population_pipeline(ctx: Any, path: str | None, population_seed: int) -> tuple[Any, dict[str, Any]]:
    """Load --population-pipeline, or simulate a disjoint population and train one with the project's own CLI.

    Disjointness is checked on the simulated user profiles (their seeds), not on the user names, which repeat.
    """
    if path is None:
        sim = (ctx.data.meta.get("simulate") or {})
        if sim.get("seed") == population_seed:
            raise SystemExit(f"--population-seed {population_seed} is the evaluated dataset's own seed; "
                             "pick another")
        out = ctx.out / "population"
        run_commands(population_commands(
            out, preset=ctx.pipe.meta.get("preset", {}).get("name", "demo"), size=ctx.pipe.image_size[0],
            carrier_ghz=float(ctx.data.meta.get("carrier_hz", 24e9)) / 1e9, seed=population_seed,
            route=ctx.pipe.route,
            quick=ctx.st.quick, stage2_steps=ctx.st.population_steps,
            cover_conditions=covers_conditions(ctx.data.meta)),
            ctx.log, getattr(ctx, "threads", None))
        path = str(out / "pipeline")
    pop = DopplerPipeline.load(path, device=ctx.device)
    if pop.route != ctx.pipe.route:
        raise SystemExit(f"population pipeline {path} is a {pop.route} pipeline but the evaluated one is "
                         f"{ctx.pipe.route}: few-shot generators must be of the evaluated route")
    pop_seeds = {p["seed"]
                 for p in ((pop.meta.get("dataset") or {}).get("simulate") or {}).get("profiles", [])}
    tgt_seeds = {p["seed"] for p in (ctx.data.meta.get("simulate") or {}).get("profiles", [])}
    info = dict(path=str(path), users=len(pop.users), population_user_seeds=sorted(pop_seeds),
                shared_profiles=sorted(pop_seeds & tgt_seeds),
                dataset_fingerprint=(pop.meta.get("dataset") or {}).get("fingerprint"))
    if info["shared_profiles"]:
        raise SystemExit(f"population pipeline {path} was trained on target users (profile seeds "
                         f"{info['shared_profiles']}): the few-shot protocol needs a disjoint population")
    if info["dataset_fingerprint"] == ctx.data.fingerprint:
        raise SystemExit(f"population pipeline {path} was trained on the evaluated dataset itself")
    if not pop_seeds:
        ctx.log("warning: cannot verify the population's users are disjoint (no simulate profiles in its "
                "provenance)")
    return pop, info


def main(argv: list[str] | None = None) -> int:
    """Build (or resume building) a population pipeline by hand, e.g. the one behind the demo report's small-k
    rows."""
    p = argparse.ArgumentParser(prog="python -m training.eval.population", description=main.__doc__)
    p.add_argument("--out", default="runs/population",
                   help="work folder; the pipeline lands in <out>/pipeline")
    p.add_argument("--preset", default="demo", help="architecture preset (default demo)")
    p.add_argument("--size", type=int, default=64, help="image size of the simulated population (default 64)")
    p.add_argument("--carrier-ghz", type=float, default=24.0, help="carrier frequency in GHz (default 24)")
    p.add_argument("--seed", type=int, default=1,
                   help="simulate seed; must differ from the evaluated data's (default 1)")
    p.add_argument("--route", default="kl", choices=("kl", "vq-latent", "vq-diffusion"),
                   help="pipeline route")
    p.add_argument("--stage2-steps", type=int, default=0,
                   help="stage-2 steps (default: as `evaluate --fewshot`)")
    p.add_argument("--cover-conditions", action="store_true",
                   help="simulate with --cover-conditions, as for an "
                        "evaluated dataset made that way (data/sim10c)")
    args = p.parse_args(argv)
    out = Path(args.out)
    run_commands(population_commands(out, preset=args.preset, size=args.size, carrier_ghz=args.carrier_ghz,
                                     seed=args.seed, route=args.route, stage2_steps=args.stage2_steps,
                                     resume=True, cover_conditions=args.cover_conditions))
    print(f"population pipeline: {out / 'pipeline'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
