"""`dopplergen enroll`: a new person from a few recordings -> a complete pipeline folder with that person
added.

Only the person's user-encoder row is learnt (models.enrolment; UNet and VAE frozen and copied byte for byte).
Every existing row is copied bit for bit, so existing users give the same bytes for the same seed as before.
The output folder is written next to its final place and renamed into it, so a crash leaves no half-written
pipeline; `--out` equal to `--pipeline` updates it in place. Provenance (file hashes, k, steps, final loss,
seconds) goes into dopplergen.json under "enrolled_users".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.paths import USER_ID_RULE, is_new_user_id
from models.recording import IMAGE_SUFFIXES, DatasetError, read_file
from training.cli_types import add_threads_argument, positive_float, positive_int, set_threads
from training.progress import progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    from models.enrolment import EnrolConfig

    d = EnrolConfig()
    p.add_argument("--pipeline", required=True, help="pipeline folder to add the person to")
    p.add_argument("--user", required=True,
                   help="the new person's user ID (letters, digits, . _ -; up to 64)")
    p.add_argument("--data", required=True,
                   help="folder of that person's recordings: .npy in dB, or PNG/JPEG images (grey = dB, or "
                        "colour-mapped)")
    p.add_argument("--colormap", default=None, metavar="NAME",
                   help="matplotlib colour map the colour images were drawn with (jet, turbo, viridis, ...); "
                        "default: the best-fitting one is detected, and an image no map fits is refused")
    p.add_argument("--out", required=True,
                   help="pipeline folder to write: a new folder, or --pipeline itself (in place); another "
                        "existing pipeline folder only with --force; never a folder that is not a pipeline, "
                        "nor --data or a folder inside it")
    p.add_argument("--activity", default=None, metavar="NAME",
                   help="what the recordings are of, for a pipeline conditioned on activity (one of "
                        "its activities, e.g. walk): the person is enrolled under it, and their samples are "
                        "of it when a request names no activity (default: unknown; samples then draw from "
                        "every activity the pipeline learnt)")
    p.add_argument("--steps", type=positive_int, default=d.steps,
                   help=f"optimiser steps on the new row (default {d.steps})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="latents per step (default "
                                                                        f"{d.batch_size})")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial row and the noise draws (default "
                                                       "0)")
    p.add_argument("--replace", action="store_true", help="re-enrol a user ID the pipeline already has")
    p.add_argument("--force", action="store_true",
                   help="replace an existing pipeline folder named by --out")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda")
    add_threads_argument(p)


def read_person(folder: Path, channels: int, dyn_range_db: float, size: tuple[int, int],
                colormap: str | None = None) -> tuple[Any, list[dict]]:
    """Every recording directly in `folder` -> (N, C, H, W) dB and [{file, sha256[, colormap]}], by the
    dataset reader's per-file rules (models/recording.py); colour images through `colormap` or the
    detected map."""
    import numpy as np

    if not folder.is_dir():
        raise DatasetError(f"--data {folder}: not a directory (give the folder of the person's recordings)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder}: user folder has no {', '.join(IMAGE_SUFFIXES)} files")
    arrays, hashes = [], []
    for f in files:
        raw = f.read_bytes()
        reading = read_file(raw, f.name, channels, dyn_range_db, size, colormap)
        arrays.append(reading.db)
        hashes.append({"file": f.name, "sha256": hashlib.sha256(raw).hexdigest()})
        if reading.colormap is not None:
            hashes[-1].update(colormap=reading.colormap, colormap_detected=reading.detected)
    return np.stack(arrays), hashes


def colour_summary(hashes: list[dict]) -> str | None:
    """'3 colour images read through jet (detected)', or None when every file was grey or .npy."""
    maps: dict[str, int] = {}
    for h in hashes:
        if "colormap" in h:
            key = f"{h['colormap']} ({'detected' if h['colormap_detected'] else 'as named'})"
            maps[key] = maps.get(key, 0) + 1
    if not maps:
        return None
    return "; ".join(f"{n} colour image(s) read through {k}" for k, n in maps.items())


def write_pipeline_atomically(src: Path, out: Path, user_encoder: Any, meta: dict[str, Any],
                              texture: Any = None) -> None:
    """Copy `src` to a temporary sibling of `out`, replace user_encoder/, dopplergen.json (and texture/, when
    given) there, rename into place."""
    from models.pipeline import META_FILE

    out = out.resolve()
    tmp = out.parent / f".{out.name}.enrol-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        shutil.rmtree(tmp / "user_encoder")
        user_encoder.save_pretrained(tmp / "user_encoder", safe_serialization=True)
        if texture is not None:
            shutil.rmtree(tmp / "texture", ignore_errors=True)
            texture.save_pretrained(tmp / "texture", safe_serialization=True)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_out(src: Path, out: Path, data: Path, force: bool) -> str | None:
    """Why `out` must not be written (None: it may): write_pipeline_atomically replaces the whole folder."""
    from models.pipeline import META_FILE

    src, out, data = src.resolve(), out.resolve(), data.resolve()
    if out == data or data in out.parents:
        return f"--out {out} is --data or inside it: writing there would delete the recordings"
    if out in data.parents or out in src.parents:
        return f"--out {out} holds --data or --pipeline: writing there would delete them"
    if out.exists() and not (out.is_dir() and (out / META_FILE).is_file()):
        return f"--out {out} exists and is not a pipeline folder (no {META_FILE}): choose a new folder"
    if out.exists() and out != src and not force:
        return (f"--out {out} is another pipeline folder: pass --force to replace it, or --out "
                "--pipeline to add the person in place")
    return None


def colormap_refused(name: str | None) -> str | None:
    """Why --colormap cannot be used (None: it can, or it was not given)."""
    from models.colormap import check_name
    from models.recording import AUTO

    try:
        if name is not None and name.lower() not in AUTO:
            check_name(name)
    except ValueError as e:
        return f"dopplergen enroll: error: --colormap: {e}"
    return None


def cast_quietly(module: Any, dtype: Any) -> Any:
    """module.to("cpu", dtype) without diffusers' warning about modules "to be kept in float32" (it warns
    even when that list is empty, as for the user encoder)."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return module.to("cpu", dtype)
    finally:
        diffusers_logging.set_verbosity(level)


def stored_dtype(pipeline: Path) -> Any:
    """The dtype user_encoder/ was saved in (the demo exports fp16), so the copy keeps it."""
    from safetensors import safe_open

    with safe_open(str(pipeline / "user_encoder" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        return f.get_tensor("embedding.weight").dtype


def known_activity(pipe: Any, activity: str | None, n: int) -> dict[str, Any] | None:
    """--activity as the n recordings' activity column (None when not given); refused (SystemExit) where the
    pipeline takes no such activity. Without it, an activity pipeline says what the samples will draw."""
    import numpy as np

    enc = pipe.condition_encoder
    names = enc.names if enc is not None else []
    if activity is None:
        if "activity" in names:
            acts = ", ".join(enc.spec("activity")["values"])
            print(f"enroll: the recordings' activity is not known: their samples draw from every activity "
                  f"the pipeline learnt ({acts}) unless a request names one; give --activity (e.g. "
                  "--activity walk) to enrol them as that")
        return None
    if "activity" not in names:
        raise SystemExit(f"--activity {activity}: {pipe.meta.get('name', 'this pipeline')} is not "
                         "conditioned on activity")
    values = enc.spec("activity")["values"]
    if activity not in values:
        raise SystemExit(f"--activity {activity!r}: the pipeline's activities are {', '.join(values)}")
    return {"activity": np.asarray([activity] * n, dtype=object)}


def run(args: argparse.Namespace) -> int:
    import torch

    from models.condition_stats import add_people, forget_people, value_rows
    from models.enrolment import EnrolConfig, Enrolment
    from models.pipeline import META_FILE, DopplerPipeline

    t0 = time.perf_counter()
    set_threads(args.threads)
    if not is_new_user_id(args.user):
        raise SystemExit(f"--user {args.user!r}: {USER_ID_RULE}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    src = Path(args.pipeline)
    refused = check_out(src, Path(args.out), Path(args.data), args.force) or colormap_refused(args.colormap)
    if refused:
        raise SystemExit(refused)
    pipe = DopplerPipeline.load(src, device=device)
    if args.user in pipe.users and not args.replace:
        raise SystemExit(f"{src} already has user {args.user!r}; pass --replace to enrol it again")
    try:
        x_db, hashes = read_person(Path(args.data), pipe.channels, float(pipe.normalization.dyn_range_db),
                                   pipe.image_size, args.colormap)
    except DatasetError as e:
        print(f"dopplergen enroll: error: {e}", file=sys.stderr)
        return 2
    if (colours := colour_summary(hashes)) is not None:
        print(f"enroll: {colours}")
    from models import domain

    check = domain.check(pipe, x_db)
    print(f"enroll: {'warning: ' if check.out_of_domain else ''}{check.line()}",
          file=sys.stderr if check.out_of_domain else sys.stdout)
    known = known_activity(pipe, args.activity, len(x_db))
    values = None if known is None else pipe.condition_encoder.values_tensor(
        value_rows(pipe.condition_encoder, known, len(x_db)))
    cfg = EnrolConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    job = Enrolment(pipe, x_db, [0] * len(x_db), 1, cfg, values=values)
    with progress(total=cfg.steps, desc=f"enroll {args.user}", unit="step") as bar:
        while not job.done:
            bar.set_postfix(loss=f"{job.step():.4f}", refresh=False)
            bar.update()
    rows, enc = job.result(), pipe.user_encoder
    if args.user in enc.users:  # --replace: the same index, so no other user moves
        new_rows = enc.embedding.weight.detach()[: enc.null_index].clone()
        new_rows[enc.index_of(args.user)] = rows[0].to(new_rows)
        enc = enc.with_rows(enc.users, new_rows)
    else:
        enc = enc.with_users([args.user], rows)
    seconds = time.perf_counter() - t0
    meta = json.loads((src / META_FILE).read_text())
    meta.setdefault("enrolled_users", {})[args.user] = dict(
        files=hashes, k=len(hashes), steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
        final_loss=job.final_loss(), seconds=round(seconds, 2), method="models.enrolment (user row only)",
        domain=check.to_dict(), activity=args.activity,
        enrolled_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if meta.get("conditions") and pipe.condition_encoder is not None:  # the person's own, else everyone's
        meta["conditions"] = forget_people(meta["conditions"], [args.user])
        if known is not None:
            meta["conditions"] = add_people(meta["conditions"], pipe.condition_encoder, known,
                                            [args.user] * len(x_db))
    texture = None
    if pipe.texture is not None:  # the person's own residuals join the bank (models/texture.py)
        from models.texture import build_bank

        texture = pipe.texture.merged(build_bank(pipe.vae, pipe.normalization, x_db, [args.user] * len(x_db)))
    write_pipeline_atomically(src, Path(args.out), cast_quietly(enc, stored_dtype(src)), meta, texture)
    print(f"enroll: {args.user} from {len(hashes)} recordings, {cfg.steps} steps, final loss "
          f"{job.final_loss():.4f}, {seconds:.1f} s -> {args.out} ({len(enc.users)} users)")
    return 0
