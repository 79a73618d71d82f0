"""The folder `dopplergen generate` writes: a dataset folder (meta.json, manifest.csv, <user>/<id>.npy in dB)
whose samples are planned ahead, each with its own seed, so that an interrupted or extended run resumes it.

Sample i of user u gets seed `derive_seed(run seed, u, i)`; its file name follows from (u, i, setting). The
settings that change a file's bytes are recorded in meta.json before any file appears, and a resumed run must
match them. Files are written under a temporary name and renamed, so a half file never looks finished.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset_folder import MANIFEST, manifest_path
from models.paths import check_user_ids

MANIFEST_FIELDS = ("path", "user", "split", "seed", "steps", "guidance", "scheduler")
# Settings that change a file's bytes: a resumed run must match them exactly.
_BYTE_SETTINGS = ("pipeline_fingerprint", "steps", "guidance", "guidance_by_user", "condition_guidance",
                  "scheduler",
                  "seed", "batch_size", "seed_rule", "conditions", "filter")
# --filter: candidates that did not pass, kept for inspection (a resumed run does not redraw them)
REJECTED = ".rejected"
SEED_RULE = "sha256('{seed}:{user}:{i}')[:8] & (2**53-1)"


def derive_seed(base_seed: int, user: str, i: int) -> int:
    """Per-sample seed from (run seed, user, index): stable across runs, processes and Python versions."""
    digest = hashlib.sha256(f"{int(base_seed)}:{user}:{int(i)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**53 - 1)  # fits a JSON number exactly


@dataclass(frozen=True)
class Item:
    user: str
    index: int
    seed: int
    # "<user>/<user>_gen<index>.npy" (+ "_c<setting>" in a condition sweep), relative to the output folder
    relpath: str
    setting: int = 0  # index into the condition grid


def plan_items(users: list[str], per_user: int, base_seed: int, settings: int = 1) -> list[Item]:
    """Every sample of the export, in a fixed order (user-major), with its seed and file name; each setting of
    a condition sweep reuses the same seeds."""
    check_user_ids(users, "generate")  # each ID becomes a folder under --out: no separators, no '..'
    return [
        Item(u, i, derive_seed(base_seed, u, i),
             f"{u}/{u}_gen{i:05d}" + (f"_c{k:02d}" if settings > 1 else "") + ".npy",
             k)
        for u in users
        for k in range(settings)
        for i in range(per_user)
    ]


def dataset_meta(pipe: Any) -> dict[str, Any]:
    """Radar/STFT metadata of the data the pipeline was trained on (its provenance), else the pipeline's own.

    The axes and units carry over; what described the *real* recordings (their users, simulate options,
    source) moves under "provenance", so nobody mistakes the export for the training data.
    """
    ds = pipe.meta.get("dataset")
    meta: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    if isinstance(ds, dict):
        inner = ds.get("meta")
        meta = dict(inner) if isinstance(inner, dict) else {}
        provenance = {k: ds.get(k) for k in ("fingerprint", "path") if ds.get(k) is not None}
    for key in ("users", "simulate", "source"):
        if key in meta:
            provenance[key] = meta.pop(key)
    h, w = pipe.image_size
    meta.setdefault("dyn_range_db", pipe.normalization.dyn_range_db)
    meta.update(image_size=[h, w], channels=pipe.channels, source="generated", provenance=provenance)
    return meta


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    """Write to a temporary name then rename, so an interrupted run never leaves a half file to be
    'resumed'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def write_manifest(out: Path, items: list[Item], split: str, settings: dict[str, Any],
                   conditions: list[dict[str, Any]] | None = None) -> None:
    """manifest.csv; `conditions` (one dict per item) become condition columns (speed_mps, aspect_deg,
    ...). A None (no walking speed for a fall) is written `nan`, as `simulate --activities` writes it, so the
    column still loads as numbers."""
    conditions = conditions or [{} for _ in items]
    rows = [
        dict(path=it.relpath, user=it.user, split=split, seed=it.seed, steps=settings["steps"],
             guidance=settings.get("guidance_by_user", {}).get(it.user, settings["guidance"]),
             scheduler=settings["scheduler"], **{k: float("nan") if v is None else v for k, v in c.items()})
        for it, c in zip(items, conditions, strict=True)
    ]
    tmp = out / f".{MANIFEST}.tmp"
    with tmp.open("w", newline="") as f:
        extra = [k for k in (conditions[0] if conditions else {}) if k not in MANIFEST_FIELDS]
        writer = csv.DictWriter(f, fieldnames=[*MANIFEST_FIELDS, *extra], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest_path(out))


def check_or_write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Record the settings before any file appears; refuse to resume into a folder made with other
    settings."""
    meta_file = out / "meta.json"
    if meta_file.is_file():
        old = json.loads(meta_file.read_text()).get("generation", {})
        new = meta["generation"]
        diff = {k: (old.get(k), new.get(k)) for k in _BYTE_SETTINGS if old.get(k) != new.get(k)}
        if diff:
            raise SystemExit(
                f"{out} was generated with other settings {diff}; resume needs the same ones (or a fresh "
                "--out)"
            )
        # Keep the union of users/per-user so an export can be extended (more users or more samples).
        meta["generation"]["per_user"] = max(int(old.get("per_user", 0)), new["per_user"])
        known = set(old.get("users", [])) | set(new["users"])
        meta["generation"]["users"] = [u for u in new["pipeline_users"] if u in known]
    out.mkdir(parents=True, exist_ok=True)
    meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
