"""`dopplergen evaluate`: a JSON + Markdown + PNG quality report for a pipeline against a real (or simulated)
dataset.

Sections (docs/evaluation.md explains each and why): VAE reconstruction, affinity (GAN-test), diversity
(GAN-train / TSTR), Fréchet distance and classifier two-sample test in the reference classifier's features,
physics consistency, sampler sweep and augmentation gain (k real per user vs k real + m synthetic, with
few-shot generators that never see more than the classifier's k: training/eval/augmentation.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from models.sampling import resolve
from training.cli_types import fraction, k_list, non_negative_int, positive_float, positive_int, strength
from training.eval import privacy, report, sections, sweep
from training.eval.augmentation import MIXES
from training.eval.conditions import condition_following
from training.eval.context import Context, Log, load_data
from training.eval.filters import parse_filters
from training.eval.trials import augmentation_section, default_workers
from training.sampling_options import add_sampling_arguments


@dataclass(frozen=True)
class EvalSettings:
    """How much work each section does; --quick swaps in QUICK."""

    quick: bool = False
    # generated per user for affinity/TSTR/FD/C2ST/physics/privacy; 0 = as many as real train per user, at
    # most max_gen_per_user (the activity demo has 168 per user; 100 took 547 s at load 2-3)
    gen_per_user: int = 0
    max_gen_per_user: int = 60
    classifier_epochs: int = 0  # reference classifier epochs; 0 = training.eval.classifier's default
    # floor on its optimiser steps; 0 = training.eval.classifier's default (150)
    classifier_min_steps: int = 0
    # augmentation-gain repeats (k selection, classifier init, synthetic draw)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    filters: tuple[str, ...] = ()  # synthetic-sample filters of the augmentation runs (training.eval.filters)
    filter_factor: float = 3.0  # candidates drawn per kept synthetic sample when a filter is on
    filter_tau: float = 0.5  # confidence filter: minimum probability of the requested person
    k_values: tuple[int | None, ...] = (5, 10, 20, None)  # real recordings per user; None = all
    synth_per_user: int = 30  # m: synthetic recordings per user added in the augmentation runs
    # optimiser steps of the few-shot user-row adaptation; 50 measured as good as 150 at a third of the cost
    # (docs/evaluation.md, "Levers on the few-shot generators")
    fewshot_steps: int = 50
    # sampler steps of the few-shot generators' synthetic data (0 = the pipeline's); 10 measured as useful as
    # 20 at half the cost (same section), which keeps `evaluate --fewshot` within 30 minutes on two CPU cores
    fewshot_sample_steps: int = 10
    # < 1: the few-shot generators start each sample from one of its person's k recordings, noised to this
    # fraction of the schedule (SDEdit; models.sampling.start_row); 1 = from pure noise
    init_strength: float = 1.0
    # how the augmented classifier combines real and synthetic (augmentation.MIXES)
    augment_mix: str = "balanced"
    # stage-2 steps of the population --fewshot trains; 0 = population.POPULATION_STAGE2_STEPS
    population_steps: int = 0
    sweep_per_user: int = 10  # generated per user for each sampler-sweep setting (same seeds for all)
    # DDPM-1000 is ~35x slower than DPM-Solver++ 20: fewer samples (one per user: 110 s on two CPU cores),
    # same seeds' prefix
    ddpm_per_user: int = 1
    sweep_samplers: tuple[tuple[str, int], ...] = (("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 20),
                                                   ("dpmsolver++", 10), ("dpmsolver++", 5))
    sweep_vq_steps: tuple[int, ...] = (100, 50, 25, 10)  # vq-diffusion route: respaced VQ-Diffusion steps
    sweep_guidance: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    # sampler batch (fixed shape, pad_to): samples do not depend on their batch (measured identical at 8, 16,
    # 20, 25, 32 on the CPU); 20 divides the 10-user pools (980, 100, 300 samples), so no batch is padded
    batch_size: int = 20
    figure_per_user: int = 4  # real and generated examples per user in the figure
    condition_per_setting: int = 2  # per user per (speed, aspect) setting of the condition-following section


QUICK = EvalSettings(quick=True, gen_per_user=6, classifier_epochs=2, classifier_min_steps=5, seeds=(0,),
                     k_values=(3, None),
                     synth_per_user=4, fewshot_steps=5, fewshot_sample_steps=0, sweep_per_user=2,
                     ddpm_per_user=1,
                     sweep_samplers=(("ddpm", 50), ("ddim", 5), ("dpmsolver++", 5)), sweep_vq_steps=(10, 5),
                     sweep_guidance=(1.0, 2.0),
                     batch_size=8, figure_per_user=2, condition_per_setting=1)

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", required=True, help="pipeline folder to evaluate (e.g. checkpoints/demo)")
    p.add_argument("--data", default=None,
                   help="dataset folder with train and test splits (e.g. data/sim10); with --targets, the "
                        "whole report plus the few-shot section on the targets")
    p.add_argument("--out", required=True, help="report folder: report.json, report.md, figures")
    p.add_argument("--quick", action="store_true",
                   help="tiny sample counts and epochs: a smoke test, not a measurement")
    p.add_argument("--fewshot", action="store_true",
                   help="measure augmentation gain at small k with "
                        "generators adapted from a disjoint population")
    p.add_argument("--targets", default=None,
                   help="with --fewshot: the few-shot protocol on this other data set's people (k from its "
                        "train split, scored on its test split), starting from --pipeline; alone without "
                        "--data, else as a section of the report (instead of the population protocol)")
    p.add_argument("--ood-targets", default=None, metavar="DATASET",
                   help="with --data --fewshot: a section on another domain's people (another radar's: "
                        "python -m experiments.other_radar, or your own import): the few-shot protocol from "
                        "--pipeline and, with --adapted, from the adapted pipeline, judged against the +5 "
                        "point target (docs/adapt.md)")
    p.add_argument("--adapted", default=None,
                   help="with --ood-targets, else --targets: the same protocol from this adapted pipeline "
                        "(dopplergen adapt), side by side on the same k selections and seeds")
    p.add_argument("--population-pipeline", default=None,
                   help="pipeline trained on a disjoint simulated "
                        "population (default: train one under --out)")
    p.add_argument("--population-seed", type=int, default=1,
                   help="simulate seed of the population that --fewshot trains (must differ from the data's)")
    add_sampling_arguments(p)
    p.add_argument("--gen-per-user", type=positive_int, default=None,
                   help="generated samples per user (default: as many as real train recordings, at most 60)")
    p.add_argument("--k", type=k_list, default=None,
                   help="few-shot k values: real recordings per person, comma-separated (default 5,10,20; "
                        "with --targets 5)")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="augmentation repeats per k (default 5); gains get a 95%% t-interval over the seeds")
    p.add_argument("--filter", default=None,
                   help="filter the synthetic samples of the augmentation runs: "
                        "comma-separated physics, confidence, diversity (references: "
                        "the classifier's own k real recordings), or none (default)")
    p.add_argument("--filter-factor", type=positive_float, default=None,
                   help="candidates per kept sample (default 3)")
    p.add_argument("--filter-tau", type=fraction, default=None,
                   help="confidence filter threshold (default 0.5)")
    p.add_argument("--synth-per-user", type=positive_int, default=None,
                   help="m: synthetic per user in augmentation runs")
    p.add_argument("--fewshot-steps", type=positive_int, default=None,
                   help="optimiser steps of the few-shot adaptation (50)")
    p.add_argument("--fewshot-sample-steps", type=non_negative_int, default=None,
                   help="DPM-Solver++ steps of the few-shot generators' synthetic data (default 10, at most "
                        "--steps; 0 = the evaluator's steps; DDPM and DDIM always keep the evaluator's)")
    p.add_argument("--init-strength", type=strength, default=None,
                   help="few-shot generators: start each synthetic sample from one of its person's k real "
                        "recordings, noised to this fraction of the schedule (SDEdit; 1 = from noise, the "
                        "default)")
    p.add_argument("--population-steps", type=positive_int, default=None,
                   help="stage-2 steps of the population generator that --fewshot trains (default: 3000 for "
                        "the demo preset, else the preset's training default)")
    p.add_argument("--augment-mix", default=None, choices=MIXES,
                   help="augmented classifier's training set: 'balanced' (default) "
                        "repeats the k real to about m per user so real and synthetic "
                        "are equally frequent; 'concat' uses them as they are")
    p.add_argument("--ddpm-per-user", type=positive_int, default=None,
                   help="samples per user for DDPM-1000 in the sweep (and the N of its equal-N FD column)")
    p.add_argument("--no-sweep", action="store_true", help="skip the sampler sweep")
    p.add_argument("--no-activities", action="store_true",
                   help="skip the activities section (a pipeline conditioned on activity, data with an "
                        "activity column)")
    p.add_argument("--baselines", action="store_true",
                   help="add 'Versus the alternatives': classic augmentation, an ACGAN with and without "
                        "kinematic sifting, and ours (with --fewshot) on the same few-shot protocol; with "
                        "--targets: on the targets, ours = the pipeline + enrolment, its training data = the "
                        "alternatives' population")
    p.add_argument("--seed", type=int, default=0,
                   help="evaluation seed (generated-sample seeds derive from it)")
    p.add_argument("--device", default="cpu",
                   help="torch device for sampling (the reference CNN trains on the CPU)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's); 1 is "
                        "far faster on a machine busy with other jobs")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="processes for the augmentation trials (default: one per core, at most 8, on the "
                        "CPU; 1 on an accelerator); they split --threads. 1 = in this process, as before")
    p.add_argument("--markdown", default=None,
                   help="where to write the Markdown report (default: "
                        "<out>/report.md); figure links are relative")
    p.add_argument("--write-summary", action="store_true",
                   help="also write the headline numbers into the "
                        "pipeline's dopplergen.json 'evaluation' field")


def run(args: argparse.Namespace) -> int:
    from models.pipeline import DopplerPipeline, pipeline_fingerprint

    t_start = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    st = QUICK if args.quick else EvalSettings()
    if args.gen_per_user is not None:
        st = replace(st, gen_per_user=args.gen_per_user)
    if args.seeds is not None:
        st = replace(st, seeds=tuple(range(args.seeds)))
    if args.k is not None:  # None (k = all) stays: the population protocol's reference row
        st = replace(st, k_values=(*args.k, *(k for k in st.k_values if k is None)))
    if args.filter is not None:
        st = replace(st, filters=parse_filters(args.filter))
    for opt in ("synth_per_user", "fewshot_steps", "fewshot_sample_steps", "ddpm_per_user", "augment_mix",
                "population_steps", "filter_factor", "filter_tau", "init_strength"):
        if getattr(args, opt) is not None:
            st = replace(st, **{opt: getattr(args, opt)})
    for flag in ("data", "targets", "ood_targets", "pipeline", "adapted"):  # checked before --out is made
        value = getattr(args, flag, None)
        if value and not Path(value).is_dir():
            print(f"dopplergen evaluate: error: --{flag.replace('_', '-')} {value}: not a directory",
                  file=sys.stderr)
            return 2
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    log = Log(out / "evaluate.log")
    if (args.targets or args.adapted) and not (args.fewshot and (args.targets or args.ood_targets)):
        print("dopplergen evaluate: error: --targets needs --fewshot, and --adapted needs --targets or "
              "--ood-targets", file=sys.stderr)
        return 2
    if args.ood_targets and not (args.fewshot and args.data):
        print("dopplergen evaluate: error: --ood-targets needs --data and --fewshot (it is a section of the "
              "report; alone: --fewshot --targets DATASET)", file=sys.stderr)
        return 2
    if args.targets and not args.data:
        return run_targets(args, st, out, log, t_start)
    if not args.data:
        print("dopplergen evaluate: error: --data is required (unless --fewshot --targets)", file=sys.stderr)
        return 2

    # ---- load: pipeline, the two splits, and the protocol's first checks -----------------------------------
    pipe = DopplerPipeline.load(args.pipeline, device=args.device)
    chosen = resolve(pipe, steps=args.steps, guidance=args.guidance, sampler=args.scheduler)
    steps, guidance, scheduler = chosen.steps, chosen.guidance, chosen.sampler
    named = resolve(pipe, guidance=args.guidance, condition_guidance=args.condition_guidance, named=True)
    data = load_data(args.data, pipe, log)
    ctx = Context(pipe=pipe, data=data, st=st, steps=steps, guidance=guidance, sampler=scheduler,
                      seed=args.seed, device=args.device, out=out, log=log, threads=args.threads,
                      condition_guidance=args.condition_guidance, guidance_arg=args.guidance)
    p_ds = pipe.meta.get("dataset") or {}
    res: dict[str, Any] = {
        "pipeline": dict(path=str(args.pipeline), name=pipe.name, version=pipe.version,
                         fingerprint=pipeline_fingerprint(args.pipeline),
                         dataset_fingerprint=p_ds.get("fingerprint")),
        "data": dict(path=str(args.data), fingerprint=data.fingerprint, n_train=len(data.train_y),
                     n_test=len(data.test_y),
                     users=data.users, matches_pipeline=p_ds.get("fingerprint") in (None, data.fingerprint)),
        "settings": dict(asdict(st), steps=steps, guidance=guidance,
                         condition_guidance=args.condition_guidance,
                         named_condition_guidance=(named.guidance, named.condition_guidance),
                         scheduler=scheduler,
                         seed=args.seed,
                         device=args.device, gen_per_user=ctx.gen_per_user, fewshot=bool(args.fewshot)),
    }
    if not res["data"]["matches_pipeline"]:
        log(f"warning: {args.data} is not the dataset the pipeline was trained on (fingerprints differ)")

    # ---- sections ------------------------------------------------------------------------------------------
    res["reconstruction"] = sections.reconstruction(ctx)
    ref = sections.reference_classifier(ctx)
    pool = sections.generated_pool(ctx)
    res["gan"] = sections.gan_metrics(ctx, ref, pool)
    res["fidelity"] = sections.fidelity(ctx, ref, pool)
    res["physics"] = sections.physics(ctx, pool)
    res["conditions"] = condition_following(ctx, ref, st.condition_per_setting)  # skipped without conditions
    res["sweep"] = (sweep.sweep(ctx, ref, pool) if not args.no_sweep
                    else dict(note="skipped (--no-sweep)", rows=[]))
    workers = args.workers if args.workers is not None else default_workers(args.device, args.threads)
    # with --targets, the few-shot protocol (and --baselines) runs on the targets' people, below
    res["augmentation"] = augmentation_section(ctx, pool, fewshot=args.fewshot and not args.targets,
                                               population=args.population_pipeline,
                                               population_seed=args.population_seed, workers=workers)
    if args.baselines and not args.targets:
        from training.eval.baselines import baselines_section

        res["baselines"] = baselines_section(ctx, pool, res["augmentation"],
                                             population_seed=args.population_seed, workers=workers)
    res["privacy"] = privacy.privacy_section(ctx, pool)  # docs/evaluation.md, "Privacy"
    if not args.no_activities:  # docs/evaluation.md, "Activities"; {"skipped": why} without an activity
        from training.eval.activities import activity_section

        res["activities"] = activity_section(ctx, ref, args.data, population_seed=args.population_seed)
    if args.targets:  # docs/evaluation.md, "Few-shot on people the pipeline never saw"
        res["ood"] = targets_section(args, st, out, log, adapted=None if args.ood_targets else args.adapted)
    if args.ood_targets:  # docs/adapt.md, section 5: another domain's people, as given and adapted
        res["ood_other"] = targets_section(args, st, out, log, targets=args.ood_targets, adapted=args.adapted,
                                           baselines=False)

    # ---- targets, figures, report files, optional summary in the pipeline ----------------------------------
    res["targets"] = report.targets(res, report.TARGETS)
    report.figures(ctx, pool, res)
    res["runtime_s"] = time.perf_counter() - t_start
    res["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    md = report.write_report(out, res, Path(args.markdown) if args.markdown else None)
    if args.write_summary:
        report.write_summary(Path(args.pipeline), out, res)
    met = sum(1 for t in res["targets"] if t["pass"])
    judged = sum(1 for t in res["targets"] if t["pass"] is not None)
    weak = " (reference classifier at chance: not evidence)" if report.at_chance(res) else ""
    log(f"evaluate: {met}/{judged} targets met{weak} | affinity {res['gan']['affinity_ratio']:.2f}x real | "
        f"TSTR {res['gan']['tstr_ratio']:.2f}x TRTR | C2ST {res['fidelity']['c2st']['accuracy']:.2f} | "
        f"{res['runtime_s']:.0f} s -> {md}")
    return 0


def targets_section(args: argparse.Namespace, st: EvalSettings, out: Path, log: Log, *,
                    targets: str | None = None, adapted: str | None = None,
                    baselines: bool | None = None) -> dict[str, Any]:
    """The few-shot protocol on --targets' people, or `targets`' (training/eval/ood.py): k = 5 unless --k
    names others; from --pipeline and, given `adapted`, from that adapted pipeline too."""
    from models.pipeline import DopplerPipeline
    from training.eval import ood

    st = replace(st, k_values=tuple(args.k) if args.k else
                 (tuple(k for k in st.k_values if k is not None and k <= 5) or (5,)))
    # the targets are enrolled people: sampled at the guidance the product gives them (ENROLLED_GUIDANCE)
    chosen = resolve(DopplerPipeline.load(args.pipeline), steps=args.steps, guidance=args.guidance,
                     sampler=args.scheduler, enrolled=True)
    return ood.ood_section(args.pipeline, adapted, targets or args.targets, st, steps=chosen.steps,
                           guidance=chosen.guidance, sampler=chosen.sampler, seed=args.seed,
                           device=args.device, out=out, log=log, threads=args.threads,
                           estimate_folds=0 if st.quick else 3,
                           baselines=args.baselines if baselines is None else baselines,
                           population_seed=args.population_seed)


def run_targets(args: argparse.Namespace, st: EvalSettings, out: Path, log: Log, t_start: float) -> int:
    """`--fewshot --targets DATASET [--adapted P2]` without --data: only the few-shot section on the targets
    (ood.json, ood.md)."""
    from training.eval import ood

    res = targets_section(args, st, out, log, adapted=args.adapted)
    res["runtime_s"] = round(time.perf_counter() - t_start, 1)
    (out / "ood.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    (out / "ood.md").write_text(ood.markdown(res))
    log(f"evaluate: out-of-domain few-shot on {args.targets} in {res['runtime_s']:.0f} s -> {out / 'ood.md'}")
    print(ood.markdown(res))
    return 0
