"""The dataset-folder contract, read in one place: meta.json + manifest.csv (path,user,split[,columns]) +
<user>/<id>.npy, or an ImageFolder-style folder of user folders split deterministically.

Layout and rules: docs/simulator.md "Dataset folder". The training reader (training/data/dataset.py) and the
service's example index (service/examples.py) both read it here, so they agree on rows, splits, paths, axes.
Every bad file raises DatasetError (models/recording.py) naming it, and a manifest row's errors name its line.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from models.paths import UnsafePathError, check_component, inside
from models.recording import IMAGE_SUFFIXES, DatasetError
from models.sessions import default_session, split_sessions

MANIFEST = "manifest.csv"
META = "meta.json"
COLUMNS = ("path", "user", "split")  # what every manifest row has; other columns are conditions or provenance
SPLITS = ("train", "val", "test")
READ_SPLITS = (*SPLITS, "synthetic")  # `dopplergen generate --split synthetic` rows: to merge with real ones
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)  # per user; every user gets at least one recording in each split
AXIS_KEYS = ("doppler_hz_row0", "doppler_hz_per_bin", "doppler_axis", "seconds_per_frame", "carrier_hz")


# ------------------------------------------------------------------------------------------------ files
def manifest_path(root: str | Path) -> Path:
    """Where a dataset folder's manifest is (readers and writers both name it through here)."""
    return Path(root) / MANIFEST


def meta_path(root: str | Path) -> Path:
    return Path(root) / META


def parse_meta(raw: bytes, where: str | Path) -> dict[str, Any]:
    """meta.json's bytes as a dict, or a DatasetError naming `where`."""
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{where}: invalid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    return meta


def read_meta(root: str | Path) -> dict[str, Any]:
    """The folder's meta.json, or {} when it has none."""
    path = meta_path(root)
    if not path.is_file():
        return {}
    try:
        return parse_meta(path.read_bytes(), path)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None


def parse_manifest(raw: bytes, where: str | Path, required: tuple[str, ...] = COLUMNS,
                   empty_ok: bool = False) -> list[dict[str, str]]:
    """manifest.csv's bytes as rows of strings (as written), checked to have the `required` columns."""
    try:
        reader = csv.DictReader(io.StringIO(raw.decode()))
        rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{where}: cannot read as CSV ({e})") from None
    if not rows and empty_ok:
        return rows
    missing = set(required) - set(reader.fieldnames or ())
    if missing or not rows:
        raise DatasetError(f"{where}: needs rows with {','.join(required)} (missing {sorted(missing)})")
    return rows


def read_manifest(root: str | Path, required: tuple[str, ...] = COLUMNS,
                  empty_ok: bool = False) -> list[dict[str, str]]:
    """The folder's manifest.csv rows (see parse_manifest); a DatasetError when missing or unreadable."""
    path = manifest_path(root)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    return parse_manifest(raw, path, required, empty_ok)


def listed_file(root: str | Path, row: dict[str, str], line: int) -> Path:
    """The file a row names, checked: its user is one plain name, its path stays in the folder, its split is
    known. `line` is the row's line in manifest.csv (the header is line 1)."""
    rel, where = row["path"], f"{manifest_path(root)}: line {line}"
    try:  # a crafted manifest must not read outside the folder, nor name a user that is a path
        check_component(row["user"], where)
        file = inside(root, rel, where)
    except UnsafePathError as exc:
        raise DatasetError(str(exc)) from None
    if row["split"] not in READ_SPLITS:
        raise DatasetError(f"{rel}: split {row['split']!r} is not one of {READ_SPLITS}")
    return file


def resolve_inside(root: str | Path, relative: str, where: str) -> Path:
    """`inside(root, relative)` resolved; UnsafePathError when a symlink on the way leads out of root."""
    base = Path(root).resolve()
    path = inside(base, relative, where).resolve()
    if not path.is_relative_to(base):
        raise UnsafePathError(f"{where}: path {relative!r} leads outside the folder {base} (through a link)")
    return path


# ---------------------------------------------------------------------------------------------- splits
def assign_splits(n: int, seed: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> list[str]:
    """Deterministic split names for n recordings of one user: ~70/15/15, at least one in each (n >= 3)."""
    if n < 3:
        raise ValueError(f"need at least 3 recordings per user to fill train/val/test, got {n}")
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    names = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test)
    return names[np.random.default_rng(seed).permutation(n)].tolist()


def image_folder_users(root: str | Path) -> list[Path]:
    """The user folders of an ImageFolder layout (sorted, hidden ones skipped); a DatasetError when none."""
    root = Path(root)
    users = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not users:
        raise DatasetError(f"{root}: no {MANIFEST} and no user folders")
    return users


def image_folder_files(user_dir: Path) -> list[Path]:
    """A user folder's recordings (.png and .npy), sorted by name."""
    return sorted(p for p in user_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def image_folder_rows(root: str | Path, seed: int = 0) -> list[dict[str, str]]:
    """ImageFolder layout: one folder per user of .png/.npy files; a deterministic per-user split, by session
    when the file names are windows of sessions (models/sessions.py), else per file."""
    rows = []
    for d in image_folder_users(root):
        files = image_folder_files(d)
        if not files:
            raise DatasetError(f"{d}: user folder has no .png or .npy files")
        if len(files) < 3:
            raise DatasetError(f"{d}: needs at least 3 files to split into train/val/test, has {len(files)}")
        # The split of one user depends only on its name and file list, not on the other users.
        user_seed = zlib.crc32(d.name.encode()) ^ seed
        groups = [default_session(f.name) for f in files]
        if 3 <= len(set(groups)) < len(files):  # windows of sessions (walk_s03_w12.png): whole ones per split
            by_group = split_sessions(
                dict(Counter(groups)), SPLIT_FRACTIONS[2], SPLIT_FRACTIONS[1], user_seed
            )
            rows += [{"path": f"{d.name}/{f.name}", "user": d.name, "split": by_group[g], "group": g}
                     for f, g in zip(files, groups, strict=True)]
            continue
        splits = assign_splits(len(files), seed=user_seed)
        rows += [{"path": f"{d.name}/{f.name}", "user": d.name, "split": s}
                 for f, s in zip(files, splits, strict=True)]
    return rows


# ------------------------------------------------------------------------------------------------ axes
def _descending(meta: dict[str, Any]) -> bool:
    return str(meta.get("doppler_axis", "descending")).startswith("desc")


def _resized_rows(row0: float, step: float, old_h: int, h: int, descending: bool) -> tuple[float, float]:
    """Row 0's Doppler and the step after old_h rows become h: the outer edge of row 0 stays, bins stretch."""
    edge = row0 + (step / 2 if descending else -step / 2)
    step = step * old_h / h
    return edge - (step / 2 if descending else -step / 2), step


def rescale_axes(meta: dict[str, Any], old_hw: tuple[int, int], new_hw: tuple[int, int]) -> None:
    """Keep meta's axes true after a resize (in place): same Doppler band and duration, new bin sizes."""
    if "doppler_hz_per_bin" in meta:
        row0, step = _resized_rows(float(meta.get("doppler_hz_row0", 0.0)), float(meta["doppler_hz_per_bin"]),
                                   old_hw[0], new_hw[0], _descending(meta))
        meta["doppler_hz_per_bin"] = step
        if "doppler_hz_row0" in meta:
            meta["doppler_hz_row0"] = row0
    if "seconds_per_frame" in meta:
        meta["seconds_per_frame"] = float(meta["seconds_per_frame"]) * old_hw[1] / new_hw[1]
    meta.pop("doppler_hz", None)


def axes_from_meta(meta: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(doppler_hz (D,), time_s (T,)) for an image of `shape` from a dataset's meta.json."""
    d, t = shape
    if "doppler_hz" in meta and len(meta["doppler_hz"]) == d:
        doppler = np.asarray(meta["doppler_hz"], dtype=float)
    else:
        top = float(meta["doppler_hz_row0"])
        step = float(meta["doppler_hz_per_bin"])
        doppler = top + (-1.0 if _descending(meta) else 1.0) * step * np.arange(d)
    time_s = (np.arange(t) + 0.5) * float(meta["seconds_per_frame"])
    return doppler, time_s


def spectrogram_axes(meta: dict[str, Any] | None,
                     image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """The axes of an (H, W) image: row 0's Doppler, the step between rows, the row order, time per column and
    the carrier; each None when the dataset meta does not record it (e.g. a pipeline trained on bare images).

    Row i is at `doppler_hz_row0 - i * doppler_hz_per_bin` for a "descending" axis (row 0 = most positive
    Doppler = approaching), `+` for "ascending". When the dataset was stored at another size than the model's,
    the steps are rescaled the way the training reader resizes (edges kept, bins stretched).
    """
    meta = dict(meta or {})
    old_h, old_w = (meta.get("image_size") or image_size or (1, 1))[:2]
    h, w = image_size or (old_h, old_w)  # None: the size the meta describes
    descending = _descending(meta)
    row0 = step = None
    if isinstance(meta.get("doppler_hz"), list) and len(meta["doppler_hz"]) >= 2:  # an explicit axis
        axis = [float(f) for f in meta["doppler_hz"]]
        row0, step, old_h = axis[0], abs(axis[1] - axis[0]), len(axis)
        descending = axis[0] > axis[-1]
    elif "doppler_hz_row0" in meta and "doppler_hz_per_bin" in meta:
        row0, step = float(meta["doppler_hz_row0"]), float(meta["doppler_hz_per_bin"])
    if row0 is not None and old_h != h:
        row0, step = _resized_rows(row0, step, old_h, h, descending)
    spf = meta.get("seconds_per_frame")
    spf = None if spf is None else float(spf) * old_w / w
    carrier = meta.get("carrier_hz")
    return {
        "doppler_hz_row0": row0,
        "doppler_hz_per_bin": step,
        "doppler_axis": "descending" if descending else "ascending",
        "seconds_per_frame": spf,
        "carrier_hz": None if carrier is None else float(carrier),
    }
