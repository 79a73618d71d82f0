"""`dopplergen generate --min-distance-db D`: drop exported samples nearer than D dB (RMS at the best circular
time shift, training/eval/privacy.py) to any training recording the pipeline holds, or to a --reference set.

What the pipeline holds: its texture bank (models/texture.py) stores, for `per_user` train recordings per
person, the reconstruction D(E(x)) and the residual x - D(E(x)). Their sum is the recording itself (clipped to
the dB range, in fp16), so those recordings are the reference when no --reference is given. They are only the
bank's recordings (20 per person by default), not the whole training set the networks saw: pass the training
data as --reference to check against all of it. A pipeline without a bank holds no recording, and then
--reference is required.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def reference_recordings(pipe: Any, reference: str | None) -> tuple[np.ndarray, str]:
    """(recordings (N, C, H, W) dB, description): the --reference folder's train split, else the bank's."""
    if reference:
        from training.data.dataset import load_dataset

        ds = load_dataset(reference, split="train", channels=pipe.channels, size=pipe.image_size,
                          dyn_range_db=pipe.normalization.dyn_range_db)
        return ds.x, f"{len(ds.x)} train recordings of {reference}"
    bank = getattr(pipe, "texture", None)
    if bank is None:
        raise SystemExit("--min-distance-db: this pipeline holds no training recording (no texture bank); "
                         "give the training data as --reference")
    x = (bank.means.float() + bank.residuals.float()).numpy()
    return x, f"the {len(x)} recordings of the pipeline's texture bank (reconstruction + residual)"


def apply_min_distance(out: Path, items: list[Any], min_db: float, ref: np.ndarray, source: str,
                       meta: dict[str, Any], rejected_dir: str) -> list[Any]:
    """Keep the items at >= min_db from every reference recording; move the others under
    <out>/<rejected_dir>/, record the rejection rate in meta.json["generation"]["min_distance_report"] and
    print it."""
    from training.eval.privacy import distances_db

    def where(it: Any, rejected: bool) -> Path:
        return out / rejected_dir / it.relpath if rejected else out / it.relpath

    if not items:
        return items
    x = np.stack([np.load(where(it, not where(it, False).is_file())) for it in items])
    x = x[:, None] if x.ndim == 3 else x
    nearest = distances_db(x, ref).min(1)
    kept = []
    for it, d in zip(items, nearest, strict=True):
        keep = bool(d >= min_db)
        src, dst = where(it, keep), where(it, not keep)
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        if keep:
            kept.append(it)
    n_drop = len(items) - len(kept)
    meta["generation"]["min_distance_report"] = dict(
        min_distance_db=float(min_db), reference=source, candidates=len(items), rejected=n_drop,
        rejection_rate=n_drop / len(items), nearest_db_min=float(nearest.min()),
        nearest_db_median=float(np.median(nearest)))
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"min distance {min_db:g} dB to {source}: rejected {n_drop} of {len(items)} samples "
          f"({100 * n_drop / len(items):.1f}%; nearest {nearest.min():.2f} dB, median "
          f"{np.median(nearest):.2f} dB) -> {out / rejected_dir}")
    return kept
