"""`dopplergen texture`: build a pipeline's texture bank (models/texture.py) from a dataset's training
recordings.

    dopplergen texture --pipeline checkpoints/demo --data data/sim10c   # writes checkpoints/demo/texture/
    dopplergen texture --pipeline checkpoints/demo --remove             # back to the decoder's mean

The residuals x - D(E(x)) of `--per-user` train-split recordings per person go through the pipeline's own
stage 1. People the pipeline does not serve are skipped; people without a bank entry draw from the whole bank.
Only the texture/ folder and dopplergen.json["texture"] change; every network is left byte for byte.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from training.cli_types import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    from models.texture import DEFAULT_PER_USER

    p.add_argument("--pipeline", required=True, help="pipeline folder to add the bank to (in place)")
    p.add_argument("--data", help="dataset folder of real recordings (its train split is used)")
    p.add_argument("--per-user", type=positive_int, default=DEFAULT_PER_USER,
                   help=f"residuals kept per person (default {DEFAULT_PER_USER}; ~8 KB each at 64x64)")
    p.add_argument("--split", default="train", help="dataset split to take recordings from (default train)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of recordings (default 0)")
    p.add_argument("--source", default=None, choices=("own", "population"),
                   help="whose residual a sample gets: 'population' (default: other people's, so no sample "
                        "carries its own person's recorded speckle; docs/evaluation.md, Privacy) or 'own'")
    p.add_argument("--shift", default=None, choices=("fit", "random"),
                   help="the residual's time shift: 'fit' (default: the matched reconstruction's) or "
                        "'random'")
    p.add_argument("--remove", action="store_true", help="delete the pipeline's texture bank instead")


def run(args: argparse.Namespace) -> int:
    from models.pipeline import DopplerPipeline, PipelineError
    from models.pipeline_meta import META_FILE
    from models.recording import DatasetError
    from models.texture import build_bank

    folder = Path(args.pipeline)
    try:
        pipe = DopplerPipeline.load(folder)
    except (PipelineError, OSError) as exc:
        print(f"dopplergen texture: error: {exc}", file=sys.stderr)
        return 2
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text())
    if args.remove:
        shutil.rmtree(folder / "texture", ignore_errors=True)
        meta.pop("texture", None)
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        print(f"{folder}: texture bank removed")
        return 0
    if not args.data:
        print("dopplergen texture: error: --data is required (or --remove)", file=sys.stderr)
        return 2
    if args.per_user < 1:
        print("dopplergen texture: error: --per-user must be >= 1", file=sys.stderr)
        return 2
    from training.data.dataset import load_dataset

    t0 = time.perf_counter()
    try:
        ds = load_dataset(args.data, split=args.split, channels=pipe.channels, size=pipe.image_size,
                          dyn_range_db=pipe.normalization.dyn_range_db)
    except (DatasetError, OSError, ValueError) as exc:
        print(f"dopplergen texture: error: {exc}", file=sys.stderr)
        return 2
    served = set(pipe.users)
    rows_users = [ds.users[int(k)] for k in ds.labels]
    keep = [i for i, u in enumerate(rows_users) if u in served]
    if not keep:
        print(f"dopplergen texture: error: no {args.split} recording of {args.data} belongs to a person the "
              f"pipeline serves ({', '.join(pipe.users[:5])}...)", file=sys.stderr)
        return 2
    owners = [rows_users[i] for i in keep]
    options = {k: v for k, v in (("source", args.source), ("shift", args.shift)) if v is not None}
    bank = build_bank(pipe.vae, pipe.normalization, ds.x[keep], owners,
                      per_user=args.per_user, seed=args.seed, **options)
    tmp = folder / "texture.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    bank.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder / "texture", ignore_errors=True)
    tmp.rename(folder / "texture")
    r = bank.residuals.float()
    meta["texture"] = dict(data=str(args.data), split=args.split, per_user=int(args.per_user),
                           seed=int(args.seed),
                           count=int(len(r)), people=len(bank.config.users), source=bank.config.source,
                           shift=bank.config.shift,
                           residual_rms_db=round(float(r.pow(2).mean().sqrt()), 3))
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    skipped = sorted(set(rows_users) - served)
    print(f"{folder}/texture: {len(r)} residuals of {len(bank.config.users)} people (rms "
          f"{meta['texture']['residual_rms_db']} "
          f"dB){'; skipped people the pipeline does not serve: ' + ', '.join(skipped) if skipped else ''} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0
