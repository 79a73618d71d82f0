"""`dopplergen adapt`: a trained pipeline adapted to a user's radar -> a normal pipeline folder.

The user's data set (a dataset folder, e.g. from `dopplergen import`) may be a few people with many
recordings, many people with a few, or only the new people's k recordings. Stage 1 fine-tunes the autoencoder
to it and re-measures the latent scaling; stage 2 trains low-rank adapters on the UNet (peft, merged into the
weights at the end) and a row for each of the data set's people, with a prior-preservation term on samples of
the pipeline's own people (training/stages/adapt_steps.py). The texture bank is rebuilt from the new data, and
dopplergen.json gets the new domain reference (models/domain.py) and an "adapt" record. The service, `enroll`,
`generate` and `evaluate` take the result unchanged. Loss curve and log: <out>-run/ (or --run-dir)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from training.cli_types import non_negative_float, non_negative_int, positive_int

PARTS = ("decoder", "all")


@dataclass
class AdaptConfig:
    """Options of one adaptation; recorded in dopplergen.json["adapt"]. Defaults: docs/adapt.md."""

    vae_steps: int = 300  # stage 1 optimiser steps (0: keep the autoencoder)
    vae_part: str = "decoder"  # decoder | all (encoder and decoder)
    vae_lr: float = 1e-4
    unet_steps: int = 400  # stage 2 optimiser steps
    rank: int = 8  # LoRA rank
    lora_conv: bool = False  # adapters on the ResNet convolutions too, not only attention
    lr: float = 1e-3  # LoRA weights
    row_lr: float = 1e-2  # the data set's people's new rows
    batch_size: int = 16
    prior_weight: float = 1.0  # DreamBooth's prior-preservation weight (0: none)
    prior_per_user: int = 8  # samples of each of the pipeline's own people, drawn before adapting
    prior_steps: int = 20  # sampler steps of those samples
    null_prob: float = 0.1  # classifier-free guidance dropout, as in training
    time_shifts: int = 8
    kl_weight: float = 1e-6
    seed: int = 0

    def validate(self) -> None:
        if self.vae_part not in PARTS:
            raise ValueError(f"--vae-part must be one of {PARTS}")
        steps = (self.vae_steps, self.unet_steps)
        if min(*steps, self.prior_per_user) < 0 or not sum(steps):
            raise ValueError("--vae-steps, --unet-steps, --prior-per-user must be >= 0, with steps to run")
        if self.rank < 1 or self.batch_size < 2 or self.prior_weight < 0:
            raise ValueError("--rank >= 1, --batch-size >= 2 and --prior-weight >= 0, please")


def _progress(total: int, desc: str, logger) -> Any:
    from training.progress import progress

    bar = progress(total=total, desc=desc, unit="step", file=sys.stderr)

    def log(step: int, terms: dict[str, float]) -> None:
        logger.write(json.dumps({"stage": desc, "step": step, **terms}) + "\n")
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items()}, refresh=False)
        if step == total - 1:
            bar.close()
    return log


def adapt(pipeline: str | Path, data: str | Path, out: str | Path, cfg: AdaptConfig,
          run_dir: str | Path | None = None, say=print) -> dict[str, Any]:
    """Adapt `pipeline` to the dataset folder `data`, write the pipeline folder `out`; returns the summary."""
    from models import domain
    from models.pipeline import DopplerPipeline
    from models.texture import build_bank
    from training.data.dataset import load_dataset
    from training.data.staging import check_free, staged_folder
    from training.eval import plots
    from training.stages import adapt_steps as S
    from training.stages.logs import read_jsonl

    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out)
    check_free(out)
    run = Path(run_dir) if run_dir else out.with_name(out.name + "-run")
    if not Path(data).is_dir():
        raise ValueError(f"--data {data}: not a directory (give a dataset folder of your radar)")
    torch.manual_seed(cfg.seed)
    pipe = DopplerPipeline.load(pipeline)
    if pipe.route != "kl":
        raise ValueError(f"{pipeline}: adapt needs a pipeline of the kl route (an AutoencoderKL), not "
                         f"{pipe.route!r}")
    h, w = pipe.image_size
    ds = load_dataset(data, channels=pipe.channels, size=(h, w), dyn_range_db=pipe.normalization.dyn_range_db)
    train = ds.filter(split="train")
    held_split = "val" if "val" in set(ds.splits.tolist()) else "test"
    held = ds.filter(split=held_split)
    held_x = held.x if len(held) else train.x  # what the domain check and the new reference are measured on
    if len(train) == 0:
        raise ValueError(f"{data}: its train split is empty")
    taken = sorted(set(ds.users) & set(pipe.users))
    if taken:
        raise ValueError(f"{data}: people {taken[:5]} are already in {pipeline}; rename them in the data set "
                         "(or adapt a pipeline without them)")
    new_users = sorted({ds.users[i] for i in train.labels})
    norm = pipe.normalization
    before = domain.check(pipe, held_x)
    say(f"adapt: {len(train)} train recordings of {len(new_users)} people from {data}; before: "
        f"{before.line()}")

    run.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves nothing behind
    x_prior_db, y_prior = S.prior_samples(pipe, cfg.prior_per_user, cfg.prior_steps, cfg.seed)
    x_user = torch.as_tensor(norm.to_model(train.x))
    x_prior = torch.as_tensor(norm.to_model(x_prior_db))
    with open(run / "log.jsonl", "w") as logger:
        if cfg.vae_steps:
            S.finetune_vae(pipe.vae, x_user, x_prior, steps=cfg.vae_steps, part=cfg.vae_part, lr=cfg.vae_lr,
                           batch_size=cfg.batch_size, kl_weight=cfg.kl_weight, seed=cfg.seed,
                           log=_progress(cfg.vae_steps, "adapt: stage 1 (autoencoder)", logger))
        old_scaling = float(pipe.vae.config.scaling_factor)
        measured = S.measured_scaling(pipe.vae, torch.cat([x_user, x_prior]))
        if cfg.vae_part == "all" and cfg.vae_steps:  # the encoder moved: the latents' scale is the new one's
            pipe.vae.register_to_config(scaling_factor=measured)
        n_old = len(pipe.users)
        mean_row = pipe.user_encoder.embedding.weight.detach()[:n_old].mean(0, keepdim=True)
        pipe.user_encoder = pipe.user_encoder.with_users(new_users, mean_row.repeat(len(new_users), 1))
        rows = S.RowTrainer(pipe.user_encoder, n_old, len(new_users))
        if cfg.unet_steps:
            lora = S.add_lora(pipe.unet, cfg.rank, cfg.lora_conv)
            y_user = torch.as_tensor([n_old + new_users.index(ds.users[i]) for i in train.labels])
            S.train_adapters(pipe, rows, lora, x_user, y_user, x_prior, torch.as_tensor(y_prior),
                             steps=cfg.unet_steps, lr=cfg.lr, row_lr=cfg.row_lr, batch_size=cfg.batch_size,
                             prior_weight=cfg.prior_weight, null_prob=cfg.null_prob, shifts=cfg.time_shifts,
                             seed=cfg.seed, values_fn=S.condition_values(pipe, train.extra, cfg.null_prob),
                             log=_progress(cfg.unet_steps, "adapt: stage 2 (UNet LoRA)", logger))
            S.merge_lora(pipe.unet)
        pipe.unet.requires_grad_(False)
        pipe.user_encoder = pipe.user_encoder.with_rows(pipe.users, rows.table())

    owners = [ds.users[i] for i in train.labels]
    if pipe.condition_encoder is not None and pipe.meta.get("conditions"):
        # the new people's own distributions of the conditions their manifest records (per activity too)
        from models.condition_stats import add_people

        pipe.meta["conditions"] = add_people(pipe.meta["conditions"], pipe.condition_encoder, train.extra,
                                             owners)
    if pipe.texture is not None:
        pipe.texture = build_bank(pipe.vae, norm, train.x, owners, **pipe.texture.options())
        pipe.meta["texture"] = {**(pipe.meta.get("texture") or {}), "data": str(data), "split": "train",
                                "count": int(len(pipe.texture.owners)),
                                "people": len(pipe.texture.config.users)}
    reference = domain.reference(pipe, held_x, f"{data} ({held_split if len(held) else 'train'} split)")
    # the same held-out error against the source pipeline's reference: one reconstruction pass, not two
    after = domain.DomainCheck(reference["heldout_recon_error_db"], before.reference_db)
    pipe.meta = {**pipe.meta, "domain": reference,
                 "dataset": {**(pipe.meta.get("dataset") or {}), "meta": ds.meta, "path": str(data),
                             "fingerprint": ds.fingerprint}}
    summary = {"config": asdict(cfg), "pipeline": str(pipeline), "data": str(data), "users_added": new_users,
               "n_train": len(train), "recon_error_db_before": before.recon_error_db,
               "recon_error_db_after": after.recon_error_db, "scaling_factor_before": old_scaling,
               "scaling_factor_measured": measured,
               "scaling_factor": float(pipe.vae.config.scaling_factor),
               "seconds": round(time.perf_counter() - t0, 1)}
    pipe.meta["adapt"] = summary
    with staged_folder(out) as tmp:
        pipe.save(tmp)
    plots.plot_losses(read_jsonl(run / "log.jsonl"), ["vae_loss", "unet_loss", "prior_loss"],
                      run / "loss.png", "adapt")
    shutil.copy(out / "dopplergen.json", run / "dopplergen.json")
    say(f"adapt: after: {after.line()}")
    say(f"adapt: wrote {out} ({len(pipe.users)} people, {len(new_users)} new) in {summary['seconds']:.0f} s; "
        f"loss curve {run / 'loss.png'}")
    return summary


def domain_report(pipeline: str | Path, data: str | Path) -> None:
    """`import --pipeline`: how far a dataset folder's recordings are from that pipeline's domain
    (models/domain.py), in one line; a warning naming `dopplergen adapt` when out of domain."""
    import numpy as np

    from models import domain
    from models.pipeline import DopplerPipeline
    from training.data.dataset import load_dataset

    pipe = DopplerPipeline.load(pipeline)
    ds = load_dataset(data, channels=pipe.channels, size=pipe.image_size)
    check = domain.check(pipe, ds.x[np.random.default_rng(0).permutation(len(ds.x))[:64]])
    print(f"import: {'warning: ' if check.out_of_domain else ''}against {pipeline}: {check.line()}",
          file=sys.stderr if check.out_of_domain else sys.stdout)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = AdaptConfig()
    p.add_argument("--pipeline", required=True, help="trained pipeline folder to adapt")
    p.add_argument("--data", required=True,
                   help="dataset folder of the user's radar (e.g. from dopplergen import)")
    p.add_argument("--out", required=True, help="pipeline folder to write (must not exist or be empty)")
    p.add_argument("--run-dir", default=None, help="log and loss curve (default: <out>-run)")
    p.add_argument("--vae-steps", type=non_negative_int, default=d.vae_steps,
                   help=f"stage 1 steps (default {d.vae_steps})")
    p.add_argument("--vae-part", choices=PARTS, default=d.vae_part,
                   help="fine-tune the decoder only (default) or the whole autoencoder")
    p.add_argument("--unet-steps", type=non_negative_int, default=d.unet_steps,
                   help=f"stage 2 steps (default {d.unet_steps})")
    p.add_argument("--rank", type=positive_int, default=d.rank, help=f"LoRA rank (default {d.rank})")
    p.add_argument("--lora-conv", action="store_true", help="adapters on the convolutions too")
    p.add_argument("--prior-weight", type=non_negative_float, default=d.prior_weight,
                   help=f"prior-preservation weight (default {d.prior_weight}; 0 = none)")
    p.add_argument("--prior-per-user", type=non_negative_int, default=d.prior_per_user,
                   help=f"samples per own person for the prior term (default {d.prior_per_user})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--seed", type=int, default=d.seed, help="default 0")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")


def run(args: argparse.Namespace) -> int:
    from training.data.dataset import DatasetError

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = AdaptConfig(vae_steps=args.vae_steps, vae_part=args.vae_part, unet_steps=args.unet_steps,
                      rank=args.rank, lora_conv=args.lora_conv, prior_weight=args.prior_weight,
                      prior_per_user=args.prior_per_user, batch_size=args.batch_size, seed=args.seed)
    try:
        adapt(args.pipeline, args.data, args.out, cfg, args.run_dir)
    except (DatasetError, ValueError, FileExistsError, OSError) as e:
        print(f"dopplergen adapt: error: {e}", file=sys.stderr)
        return 2
    return 0
