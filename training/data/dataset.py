"""The dataset folder (meta.json + manifest.csv + <user>/<id>.npy), and ImageFolder-style folders of PNG/NPY.

Layout and rules: DESIGN.md "Dataset folder". Every bad file raises DatasetError naming it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.paths import UnsafePathError, check_component, inside
from models.recording import IMAGE_SUFFIXES, DatasetError
from models.recording import read_npy as _read_npy
from models.recording import read_png as _read_png
from models.recording import resize as _resize
from models.recording import to_channels as _to_channels
from models.sessions import default_session, split_sessions

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
READ_SPLITS = (*SPLITS, "synthetic")  # `dopplergen generate --split synthetic` rows: generated, to merge with real ones
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)  # per user; every user gets at least one recording in each split
DEFAULT_DYN_RANGE_DB = 60.0  # for folders without meta.json (PNG grey 0..255 -> -R..0 dB)


@dataclass(frozen=True)
class Record:
    """One spectrogram to write: user, id (file stem), dB array (doppler, time), split, extra manifest columns."""

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

    def filter(self, split: str | Sequence[str] | None = None, users: Sequence[str] | None = None) -> SpectrogramSet:
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
def assign_splits(n: int, seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> list[str]:
    """Deterministic split names for n recordings of one user: ~70/15/15, at least one in each (n >= 3)."""
    if n < 3:
        raise ValueError(f"need at least 3 recordings per user to fill train/val/test, got {n}")
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    names = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    return names[np.random.default_rng(seed).permutation(n)].tolist()


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
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "user", "split", *extra_cols], lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    meta = {"format_version": FORMAT_VERSION, **meta}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


# ----------------------------------------------------------------------------------------------- read
def _rescale_axes(meta: dict[str, Any], old_hw: tuple[int, int], new_hw: tuple[int, int]) -> None:
    """Keep meta's axes true after a resize: same Doppler band and duration, new bin sizes."""
    if "doppler_hz_per_bin" in meta:
        old_step = float(meta["doppler_hz_per_bin"])
        new_step = old_step * old_hw[0] / new_hw[0]
        meta["doppler_hz_per_bin"] = new_step
        if "doppler_hz_row0" in meta:
            top_edge = float(meta["doppler_hz_row0"]) + old_step / 2  # descending axis: row 0 is the top
            meta["doppler_hz_row0"] = top_edge - new_step / 2
    if "seconds_per_frame" in meta:
        meta["seconds_per_frame"] = float(meta["seconds_per_frame"]) * old_hw[1] / new_hw[1]
    meta.pop("doppler_hz", None)


def _image_folder_rows(root: Path, seed: int) -> list[dict[str, str]]:
    """ImageFolder layout: one folder per user of .png/.npy files; a deterministic per-user split, by session
    when the file names are windows of sessions (models/sessions.py), else per file."""
    user_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not user_dirs:
        raise DatasetError(f"{root}: no manifest.csv and no user folders")
    rows = []
    for d in user_dirs:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{d}: user folder has no .png or .npy files")
        if len(files) < 3:
            raise DatasetError(f"{d}: needs at least 3 files to split into train/val/test, has {len(files)}")
        # The split of one user depends only on its name and file list, not on the other users.
        user_seed = zlib.crc32(d.name.encode()) ^ seed
        groups = [default_session(f.name) for f in files]
        if 3 <= len(set(groups)) < len(files):  # windows of sessions (walk_s03_w12.png): no session spans two splits
            by_group = split_sessions(dict(Counter(groups)), SPLIT_FRACTIONS[2], SPLIT_FRACTIONS[1], user_seed)
            rows += [{"path": f"{d.name}/{f.name}", "user": d.name, "split": by_group[g], "group": g}
                     for f, g in zip(files, groups, strict=True)]
            continue
        splits = assign_splits(len(files), seed=user_seed)
        rows += [{"path": f"{d.name}/{f.name}", "user": d.name, "split": s} for f, s in zip(files, splits, strict=True)]
    return rows


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
    if (root / "meta.json").exists():
        raw = (root / "meta.json").read_bytes()
        digest.update(raw)
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{root / 'meta.json'}: invalid JSON ({e})") from None
    if (root / "manifest.csv").exists():
        raw = (root / "manifest.csv").read_bytes()
        digest.update(raw)
        rows = list(csv.DictReader(io.StringIO(raw.decode())))
        missing = {"path", "user", "split"} - set(rows[0] if rows else {})
        if not rows or missing:
            raise DatasetError(f"{root / 'manifest.csv'}: needs rows with path,user,split (missing {sorted(missing)})")
        meta.setdefault("source", "manifest")
    else:
        rows = _image_folder_rows(root, seed)
        digest.update(json.dumps(rows).encode())
        meta.setdefault("source", "imagefolder")
    dyn = float(dyn_range_db or meta.get("dyn_range_db", DEFAULT_DYN_RANGE_DB))
    meta["dyn_range_db"] = dyn
    hw = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    expect = hw or (tuple(meta["image_size"]) if "image_size" in meta else None)

    arrays = []
    for line, r in enumerate(rows, start=2):  # line 1 of manifest.csv is the header
        rel, where = r["path"], f"{root / 'manifest.csv'}: line {line}"
        try:  # a crafted manifest must not read outside the folder, nor name a user that is a path
            check_component(r["user"], where)
            file = inside(root, rel, where)
        except UnsafePathError as exc:
            raise DatasetError(str(exc)) from None
        if r["split"] not in READ_SPLITS:
            raise DatasetError(f"{rel}: split {r['split']!r} is not one of {READ_SPLITS}")
        if not file.exists():
            raise DatasetError(f"{rel}: listed in manifest.csv but the file is missing")
        digest.update(rel.encode())
        digest.update(file.read_bytes())
        if file.suffix.lower() == ".png":
            arr = _read_png(file, rel, channels, dyn)
        elif file.suffix.lower() == ".npy":
            arr = _read_npy(file, rel)
        else:
            raise DatasetError(f"{rel}: unsupported file type (expected .png or .npy)")
        arr = _to_channels(arr, channels, rel)
        if hw is not None and arr.shape[1:] != hw:
            arr = _resize(arr, hw)
        expect = expect or arr.shape[1:]
        if tuple(arr.shape[1:]) != tuple(expect):
            raise DatasetError(f"{rel}: shape {arr.shape[1:]} differs from the dataset's {tuple(expect)}; pass size=")
        arrays.append(arr)

    all_users = sorted({r["user"] for r in rows})
    if hw is not None and "image_size" in meta and tuple(meta["image_size"]) != tuple(hw):
        _rescale_axes(meta, tuple(meta["image_size"]), hw)
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
        x=np.stack(arrays).astype(np.float32), labels=np.array([all_users.index(r["user"]) for r in rows], np.int64),
        users=all_users, paths=[r["path"] for r in rows], splits=np.array([r["split"] for r in rows]),
        meta=meta, fingerprint=digest.hexdigest(), extra=extra,
    )
    return out.filter(split=split, users=users) if (split is not None or users is not None) else out


def axes_from_meta(meta: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(doppler_hz (D,), time_s (T,)) for an image of `shape` from a dataset's meta.json."""
    d, t = shape
    if "doppler_hz" in meta and len(meta["doppler_hz"]) == d:
        doppler = np.asarray(meta["doppler_hz"], dtype=float)
    else:
        top = float(meta["doppler_hz_row0"])
        step = float(meta["doppler_hz_per_bin"])
        sign = -1.0 if str(meta.get("doppler_axis", "descending")).startswith("desc") else 1.0
        doppler = top + sign * step * np.arange(d)
    time_s = (np.arange(t) + 0.5) * float(meta["seconds_per_frame"])
    return doppler, time_s
