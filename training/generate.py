"""`dopplergen generate`: bulk-export generated spectrograms to a dataset folder (resumable, multi-process).

The output is a dataset folder in the interchange format (meta.json, manifest.csv, <user>/<id>.npy in dB),
so it can be fed back to training, to the evaluator, or to any downstream classifier.

Determinism: sample i of user u always gets seed `derive_seed(--seed, u, i)` and is computed at a fixed
batch shape (`pad_to=--batch-size`), so a file's bytes depend only on (pipeline, user, i, settings): not
on which batch, which process or which (resumed) run produced it. `accelerate launch --num_processes N
-m training generate ...` splits the batches across processes and writes the same bytes as one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.pipeline import pipeline_fingerprint
from models.sampling import is_enrolled, resolve
from training.cli_types import DEFAULT_THREADS, fraction, positive_float, positive_int
from training.condition_grid import condition_grid, parse_values, resolved
from training.data.generated import (
    REJECTED,
    SEED_RULE,
    Item,
    atomic_save_npy,
    check_or_write_meta,
    dataset_meta,
    plan_items,
    write_manifest,
)
from training.progress import progress
from training.sampling_options import add_sampling_arguments, check_steps


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", required=True, help="pipeline folder (e.g. checkpoints/demo)")
    p.add_argument("--per-user", type=positive_int, required=True, help="samples to generate for each user")
    p.add_argument("--users", default=None,
                   help="comma-separated user IDs (default: all users of the pipeline)")
    p.add_argument("--out", required=True, help="output dataset folder (re-running resumes it)")
    add_sampling_arguments(p)
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="samples per network call (fixed shape; part of the bytes)")
    p.add_argument("--seed", type=int, default=0,
                   help="run seed; sample i of user u gets derive_seed(seed, u, i)")
    p.add_argument("--split", default="train", choices=("train", "synthetic"),
                   help="split written in manifest.csv: 'train' (default) loads anywhere a dataset does, "
                        "e.g. as training data; 'synthetic' marks rows to be merged with real data "
                        "(`dopplergen merge REAL SYNTH --out DST`)")
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                   help="CPU threads per process (default 1, as torchrun/accelerate; benchmarks/RESULTS.md "
                        "'Threads'). CPU kernels may round differently with another thread count, so compare "
                        "bytes across runs at equal threads")
    p.add_argument("--speed-mps", default=None,
                   help="walking speed: a value, a list a,b,c or a sweep start:stop:count (e.g. 0.8:1.6:5); "
                        "default: drawn per sample from the user's training distribution")
    p.add_argument("--aspect-deg", default=None,
                   help="aspect angle, the same forms as --speed-mps (e.g. 0:60:4)")
    p.add_argument("--activity", default=None,
                   help="activity label(s), comma-separated (pipelines trained on one)")
    p.add_argument("--filter", default="none",
                   help="draw --filter-factor x --per-user candidates per user and keep --per-user that "
                        "pass, comma-separated: physics (torso speed, limb envelope, cadence within 3 robust "
                        "std of the person's --reference recordings, else of their own candidates), "
                        "confidence (a CNN trained on --reference gives the person p >= --filter-tau), "
                        "diversity (k-center in that CNN's features); rejected files go to <out>/.rejected/, "
                        "rates to meta.json (default: none)")
    p.add_argument("--filter-factor", type=positive_float, default=3.0,
                   help="candidates per kept sample with --filter")
    p.add_argument("--filter-tau", type=fraction, default=0.5, help="confidence filter threshold")
    p.add_argument("--reference", default=None,
                   help="real dataset folder whose train split the filters "
                        "(and --min-distance-db) compare with")
    p.add_argument("--no-texture", action="store_true",
                   help="leave out the pipeline's texture bank: the decoder's smooth mean")
    p.add_argument("--check-with", default=None, metavar="DIR",
                   help="the people's own recordings (a dataset folder or one folder per person): estimate "
                        "by leave-one-out whether the samples help a classifier before exporting; a negative "
                        "estimate refuses the export unless --force")
    p.add_argument("--force", action="store_true", help="export even when --check-with estimates a loss")
    p.add_argument("--min-distance-db", type=float, default=None, metavar="D",
                   help="drop samples nearer than D dB (RMS, best circular time shift) to any training "
                        "recording the pipeline holds (its texture bank's) or, with --reference, to that "
                        "folder's train split; rejected files go to <out>/.rejected/, the rate to meta.json "
                        "(training/min_distance.py)")
    p.add_argument("--device", default="cpu",
                   help="torch device; 'auto' = the one accelerate "
                        "assigns to this process (cuda:<rank> on GPUs)")


def written(out: Path, it: Item) -> bool:
    """The item's file exists, kept or (with --filter) rejected."""
    return (out / it.relpath).is_file() or (out / REJECTED / it.relpath).is_file()


def apply_filter(out: Path, items: list[Item], cfg: Any, per_user: int, meta: dict[str, Any],
                 reference: str | None) -> list[Item]:
    """Keep per_user of each person's candidates (training.eval.filters), move the others under
    <out>/.rejected/, record the rejection rates in meta.json["generation"]["filter_report"] and print the
    one-line summary."""
    from training.eval.filters import filter_with_reference, summary_line

    def where(it: Item, rejected: bool) -> Path:
        return out / REJECTED / it.relpath if rejected else out / it.relpath

    x = np.stack([np.load(where(it, not where(it, False).is_file())) for it in items])
    x = x[:, None] if x.ndim == 3 else x  # (N, C, H, W)
    sel = filter_with_reference(x, [it.user for it in items], per_user, cfg, meta=meta, reference=reference)
    kept = set(sel.index.tolist())
    for i, it in enumerate(items):
        src, dst = (where(it, True), where(it, False)) if i in kept else (where(it, False), where(it, True))
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    meta["generation"]["filter_report"] = {k: v for k, v in sel.report.items() if k != "per_user"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(summary_line(sel.report))
    return [items[i] for i in sorted(kept)]


def run_check(pipe: Any, users: list[str], args: argparse.Namespace,
              guidance_of: dict[str, float]) -> int | None:
    """--check-with: print the estimate; 2 when it is negative (and not --force), else None (go on)."""
    from models.sampling import sample
    from training.eval.utility import check_with, points, report_lines

    def rows(items):
        return sample(pipe, [pipe.user_encoder.index_of(it.user) for it in items], [it.seed for it in items],
                      num_inference_steps=args.steps, guidance_scale=[guidance_of[it.user] for it in items],
                      sampler=args.scheduler, condition_guidance_scale=args.condition_guidance).numpy()
    try:
        est, requested = check_with(pipe, users, args.check_with, per_user=args.per_user, seed=args.seed,
                                    sample_rows=rows, threads=args.threads)
    except ValueError as e:
        print(f"dopplergen generate: error: {e}", file=sys.stderr)
        return 2
    for line in report_lines(est, requested):
        print(line)
    gain = round(est.gains[requested]["mean"], 9)  # a mean of equal folds may come out at -1e-17
    if gain < 0 and not args.force:
        print(f"dopplergen generate: error: --check-with estimates {points(gain)} points for --per-user "
              f"{args.per_user}; nothing was exported. Use the recommended ratio, or --force",
              file=sys.stderr)
        return 2
    return None


def run(args: argparse.Namespace) -> int:
    """export(), and no half-written output: a run that fails before its first sample lands takes back the
    meta.json (and the folder) it made, so the next run into --out, with any settings, is not refused."""
    out = Path(args.out)
    existed, had_meta = out.exists(), (out / "meta.json").exists()
    try:
        return export(args)
    except BaseException:
        if out.is_dir() and not had_meta and not any(out.rglob("*.npy")):
            (out / "meta.json").unlink(missing_ok=True)
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise


def export(args: argparse.Namespace) -> int:
    import torch
    from accelerate import PartialState

    from models.pipeline import DopplerPipeline
    from models.sampling import sample
    from training.eval.filters import FilterConfig, parse_filters

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise SystemExit(f"--out {args.out}: a file is there; --out names a dataset folder (a new one, or an "
                         "earlier export to resume)")
    if args.threads:
        torch.set_num_threads(args.threads)
    # PartialState only forms a CPU process group (gloo) when told it runs on the CPU.
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = state.device if args.device == "auto" else args.device
    pipe = DopplerPipeline.load(args.pipeline, device=device)
    if args.min_distance_db is not None:  # the bank counts with --no-texture too; refused before generating
        from training.min_distance import apply_min_distance, reference_recordings

        ref_recordings = reference_recordings(pipe, args.reference)
    texture = pipe.texture is not None and not args.no_texture
    if not texture:
        pipe.texture = None
    asked = pipe.users if not args.users else [u.strip() for u in args.users.split(",") if u.strip()]
    unknown = [u for u in asked if u not in pipe.users]
    if unknown:
        raise SystemExit(f"unknown users {unknown}; the pipeline knows {pipe.users}")
    users = [u for u in pipe.users if u in asked]  # the pipeline's user order, whatever order was asked
    if args.condition_guidance is not None and pipe.condition_encoder is None:
        raise SystemExit("--condition-guidance: this pipeline was trained without conditions")
    grid = condition_grid(pipe, {"speed_mps": parse_values(args.speed_mps, "speed_mps"),
                                 "aspect_deg": parse_values(args.aspect_deg, "aspect_deg"),
                                 "activity": args.activity.split(",") if args.activity else None})
    # models.sampling.resolve, as the service: a sweep that names conditions is composed (identity and
    # conditions apart), all drawn is plain; enrolled people get ENROLLED_GUIDANCE unless --guidance is given
    chosen = {enrolled: resolve(pipe, steps=args.steps, guidance=args.guidance, sampler=args.scheduler,
                                condition_guidance=args.condition_guidance, named=any(bool(c) for c in grid),
                                enrolled=enrolled) for enrolled in (False, True)}
    guidance_of = {u: chosen[is_enrolled(pipe, u)].guidance for u in users}
    base = chosen[False]
    check_steps(pipe, base.steps)
    args.steps, args.guidance, args.scheduler = base.steps, base.guidance, base.sampler
    args.condition_guidance = base.condition_guidance
    enrolled_guidance = {u: g for u, g in guidance_of.items() if g != base.guidance}
    try:
        fcfg = FilterConfig(filters=parse_filters(args.filter), factor=args.filter_factor,
                            tau=args.filter_tau)
    except ValueError as e:
        raise SystemExit(f"--filter: {e}") from None
    if fcfg.filters and (len(grid) > 1 or ("physics" in fcfg.filters and grid != [{}])):
        raise SystemExit("--filter takes no condition sweep, and physics no explicit condition: it compares "
                         "each sample with the person's own walks")

    if args.check_with:
        verdict = run_check(pipe, users, args, guidance_of)
        if verdict is not None:
            return verdict
    out = Path(args.out)
    settings = dict(
        pipeline=str(args.pipeline), pipeline_name=pipe.name, pipeline_version=pipe.version,
        pipeline_fingerprint=pipeline_fingerprint(args.pipeline), steps=args.steps, guidance=args.guidance,
        condition_guidance=args.condition_guidance, scheduler=args.scheduler, seed=args.seed,
        batch_size=args.batch_size, per_user=args.per_user,
        users=users, pipeline_users=pipe.users, seed_rule=SEED_RULE, texture=texture,
        torch_threads=torch.get_num_threads(),
        # the sweep's settings (omitted: drawn)
        conditions=grid if pipe.condition_encoder is not None else None,
        filter=dict(filters=list(fcfg.filters), factor=fcfg.factor, tau=fcfg.tau, z_max=fcfg.z_max,
                    reference=args.reference) if fcfg.filters else None,
    )
    if enrolled_guidance:  # only then, so an export without enrolled people keeps its old meta.json
        settings["guidance_by_user"] = enrolled_guidance
    meta = {**dataset_meta(pipe), "generation": settings}
    if state.is_main_process:
        check_or_write_meta(out, meta)
    state.wait_for_everyone()
    meta = json.loads((out / "meta.json").read_text())

    # ---- plan: all items, minus files already written; batches dealt round-robin to processes --------------
    all_items = plan_items(users, fcfg.candidates(args.per_user), args.seed, len(grid))
    todo = [it for it in all_items if not written(out, it)]
    batches = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    mine = batches[state.process_index :: state.num_processes]

    t0 = time.perf_counter()
    desc = "generate" if state.num_processes == 1 else f"generate (process 0 of {state.num_processes})"
    bar = progress(total=sum(map(len, mine)), desc=desc, unit="sample", disable=not state.is_main_process)
    for batch in mine:
        x = sample(
            pipe, [pipe.user_encoder.index_of(it.user) for it in batch], [it.seed for it in batch],
            num_inference_steps=args.steps, guidance_scale=[guidance_of[it.user] for it in batch],
            sampler=args.scheduler, pad_to=args.batch_size, condition_guidance_scale=args.condition_guidance,
            conditions=(None if pipe.condition_encoder is None
                        else pipe.condition_encoder.values_tensor(
                            [resolved(pipe, it.user, it.seed, grid[it.setting]) for it in batch])),
        )  # (B, C, H, W) dB
        for it, img in zip(batch, x, strict=True):
            arr = img[0] if img.shape[0] == 1 else img  # (doppler, time); RGB keeps (C, H, W)
            atomic_save_npy(out / it.relpath, arr.numpy().astype(np.float32))
        bar.update(len(batch))
    bar.close()
    state.wait_for_everyone()

    # ---- manifest: every item of every run into this folder, written once by the main process --------------
    if state.is_main_process:
        g = meta["generation"]
        every = plan_items(g["users"], fcfg.candidates(int(g["per_user"])), args.seed, len(grid))
        present = [it for it in every if written(out, it)]
        if fcfg.filters:
            present = apply_filter(out, present, fcfg, int(g["per_user"]), meta, args.reference)
        if args.min_distance_db is not None:
            present = apply_min_distance(out, present, args.min_distance_db, *ref_recordings, meta, REJECTED)
        write_manifest(out, present, args.split, settings,
                       [resolved(pipe, it.user, it.seed, grid[it.setting]) for it in present])
        dt = time.perf_counter() - t0
        rate = len(todo) / dt if dt > 0 else 0.0
        print(
            f"generated {len(todo)} new samples ({len(all_items) - len(todo)} already there) for "
            f"{len(users)} users in {dt:.1f} s ({rate:.2f} samples/s, {state.num_processes} process(es)) -> "
            f"{out} [{len(present)} files in manifest]"
        )
    return 0
