"""The dataset folder (meta.json + manifest.csv + <user>/<id>.npy), and ImageFolder-style folders of PNG/NPY.

Layout and rules: docs/simulator.md "Dataset folder"; the contract (manifest, paths, splits, meta, axes) is
read by models/dataset_folder.py, shared with the service. Every bad file raises DatasetError naming it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset_folder import (
    SPLITS,
    image_folder_rows,
    listed_file,
    manifest_path,
    meta_path,
    parse_manifest,
    parse_meta,
    rescale_axes,
)
from models.dataset_folder import assign_splits as assign_splits  # re-exported for simulate and the tests
from models.paths import check_component
from models.recording import DatasetError, read_recording

FORMAT_VERSION = 1
DEFAULT_DYN_RANGE_DB = 60.0  # for folders without meta.json (PNG grey 0..255 -> -R..0 dB)


@dataclass(frozen=True)
class Record:
    """One spectrogram to write: user, id (file stem), dB array (doppler, time), split, extra manifest
    columns."""

    user: str
    rec_id: str
    db: np.ndarray
    split: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpectrogramSet:
    """Spectrograms in dB (N, C, H, W) with integer labels indexing `users` (sorted, whole-dataset order)."""

    x: np.ndarray  # float32 (N, C, H, W), dB relative to peak (<= 0)
    labels: np.ndarray  # int64 (N,)
    users: list[str]  # index order of labels; the same for every split of one dataset
    paths: list[str]  # relative to the dataset root
    splits: np.ndarray  # (N,) str
    meta: dict[str, Any]
    fingerprint: str  # sha256 of meta.json, manifest and every file's bytes (of the whole folder)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other manifest columns, per row

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def dyn_range_db(self) -> float:
        return float(self.meta.get("dyn_range_db", DEFAULT_DYN_RANGE_DB))

    def subset(self, index: np.ndarray | Sequence[int]) -> SpectrogramSet:
        """Rows `index` (a boolean mask or integer indices); users, meta and fingerprint are kept."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=np.int64)
        return replace(self, x=self.x[idx], labels=self.labels[idx], paths=[self.paths[i] for i in idx],
                       splits=self.splits[idx], extra={k: v[idx] for k, v in self.extra.items()})

    def filter(self, split: str | Sequence[str] | None = None,
               users: Sequence[str] | None = None) -> SpectrogramSet:
        """Rows of the given split(s) and/or users (labels keep the whole-dataset user order)."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            keep &= np.isin(self.splits, [split] if isinstance(split, str) else list(split))
        if users is not None:
            unknown = set(users) - set(self.users)
            if unknown:
                raise DatasetError(f"unknown users {sorted(unknown)}; the dataset has {self.users}")
            keep &= np.isin(self.labels, [self.users.index(u) for u in users])
        return self.subset(keep)

    def first_k_per_user(self, k: int, seed: int = 0) -> SpectrogramSet:
        """k rows per user, drawn without replacement with `seed` (fewer if a user has fewer)."""
        rng = np.random.default_rng(seed)
        picks = [rng.permutation(np.flatnonzero(self.labels == u))[:k] for u in np.unique(self.labels)]
        return self.subset(np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64))

    def counts(self) -> dict[str, int]:
        """Rows per user id."""
        return {u: int((self.labels == i).sum()) for i, u in enumerate(self.users)}


# ---------------------------------------------------------------------------------------------- write
def write_dataset(out_dir: str | Path, records: Iterable[Record], meta: dict[str, Any]) -> Path:
    """Write <out>/<user>/<id>.npy for each record, then manifest.csv and meta.json (byte-reproducible)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for rec in records:
        if rec.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {rec.split!r}")
        check_component(rec.user, f"{out}: record {rec.rec_id!r}")
        check_component(rec.rec_id, f"{out}: user {rec.user!r}", "recording ID")
        rel = f"{rec.user}/{rec.rec_id}.npy"
        (out / rec.user).mkdir(exist_ok=True)
        np.save(out / rel, np.asarray(rec.db, dtype=np.float32))
        rows.append({"path": rel, "user": rec.user, "split": rec.split, **rec.extra})
    extra_cols = sorted({k for r in rows for k in r} - {"path", "user", "split"})
    with open(manifest_path(out), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "user", "split", *extra_cols], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    meta = {"format_version": FORMAT_VERSION, **meta}
    meta_path(out).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


# ----------------------------------------------------------------------------------------------- read
def load_dataset(path: str | Path, split: str | Sequence[str] | None = None, channels: int = 1, *,
                 users: Sequence[str] | None = None, size: int | tuple[int, int] | None = None,
                 dyn_range_db: float | None = None, seed: int = 0) -> SpectrogramSet:
    """Read a dataset folder (manifest.csv) or an ImageFolder-style folder into a SpectrogramSet.

    `size` resizes every image (bilinear, in dB); otherwise all must share one shape. `dyn_range_db`
    maps PNG grey levels to dB (default: meta.json's, else 60). `seed` only affects ImageFolder splits.
    """
    root = Path(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    digest = hashlib.sha256()
    meta: dict[str, Any] = {}
    if meta_path(root).exists():
        raw = meta_path(root).read_bytes()
        digest.update(raw)
        meta = parse_meta(raw, meta_path(root))
    if manifest_path(root).exists():
        raw = manifest_path(root).read_bytes()
        digest.update(raw)
        rows = parse_manifest(raw, manifest_path(root))
        meta.setdefault("source", "manifest")
    else:
        rows = image_folder_rows(root, seed)
        digest.update(json.dumps(rows).encode())
        meta.setdefault("source", "imagefolder")
    dyn = float(dyn_range_db or meta.get("dyn_range_db", DEFAULT_DYN_RANGE_DB))
    meta["dyn_range_db"] = dyn
    hw = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    expect = hw or (tuple(meta["image_size"]) if "image_size" in meta else None)

    arrays = []
    for line, r in enumerate(rows, start=2):  # line 1 of manifest.csv is the header
        rel, file = r["path"], listed_file(root, r, line)
        if not file.exists():
            raise DatasetError(f"{rel}: listed in manifest.csv but the file is missing")
        digest.update(rel.encode())
        raw = file.read_bytes()
        digest.update(raw)
        # the per-file rules of every way in (models/recording.py); meta.json may name the colour map
        arr = read_recording(raw, rel, channels, dyn, hw, colormap=meta.get("colormap"))
        expect = expect or arr.shape[1:]
        if tuple(arr.shape[1:]) != tuple(expect):
            raise DatasetError(f"{rel}: shape {arr.shape[1:]} differs from the dataset's "
                               f"{tuple(expect)}; pass size=")
        arrays.append(arr)

    all_users = sorted({r["user"] for r in rows})
    if hw is not None and "image_size" in meta and tuple(meta["image_size"]) != tuple(hw):
        rescale_axes(meta, tuple(meta["image_size"]), hw)
    meta["image_size"] = list(expect)
    meta["channels"] = channels
    extra_cols = list(dict.fromkeys(k for r in rows for k in r if k not in ("path", "user", "split")))
    extra = {}
    for k in extra_cols:
        col = [r.get(k, "") for r in rows]
        try:
            extra[k] = np.array([float(v) for v in col])
        except ValueError:
            extra[k] = np.array(col)
    out = SpectrogramSet(
        x=np.stack(arrays).astype(np.float32),
        labels=np.array([all_users.index(r["user"]) for r in rows], np.int64),
        users=all_users, paths=[r["path"] for r in rows], splits=np.array([r["split"] for r in rows]),
        meta=meta, fingerprint=digest.hexdigest(), extra=extra,
    )
    return out.filter(split=split, users=users) if (split is not None or users is not None) else out
