"""Real recordings for the web page: an index of a dataset folder's .npy files per user, read without pickles.

The dataset contract (meta.json, manifest.csv, <user>/<id>.npy) is read through models/dataset_folder.py, as
the training reader reads it. Only .npy files inside the folder are served: a manifest row that points outside
it (`..`, an absolute path, a symlink out) or at another file type is skipped and counted, never opened.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.dataset_folder import (
    DatasetError,
    image_folder_files,
    image_folder_users,
    manifest_path,
    read_manifest,
    read_meta,
    resolve_inside,
    spectrogram_axes,
)
from models.paths import UnsafePathError

log = logging.getLogger("dopplergen.examples")

BASE_COLUMNS = ("path", "user", "split", "group", "source")  # the rest of a manifest's columns are conditions


# The folder cannot be indexed (no manifest and no user folders, a bad manifest or meta.json).
DatasetFolderError = DatasetError


class RecordingError(ValueError):
    """One listed recording cannot be served (unreadable, pickled, wrong shape, NaN/inf)."""


@dataclass(frozen=True)
class Recording:
    path: str  # relative to the dataset folder, as listed
    user: str
    split: str | None
    conditions: dict[str, Any] = field(default_factory=dict)  # numeric manifest values as floats


def _value(text: str) -> Any:
    """A manifest cell: a number as float, else the text; None for a non-finite number (an event's `nan`
    walking speed in a `simulate --activities` dataset), which the recording's conditions leave out."""
    try:
        v = float(text)
    except ValueError:
        return text
    return v if math.isfinite(v) else None


def _inside(root: Path, rel: str) -> Path | None:
    """`root / rel` resolved, or None when it leaves `root` or is not an existing .npy file."""
    try:
        path = resolve_inside(root, rel, str(root))
    except UnsafePathError:
        return None
    return path if path.suffix.lower() == ".npy" and path.is_file() else None


class ExampleStore:
    """Recordings per user of one dataset folder, indexed once when the service starts."""

    def __init__(self, folder: str | Path) -> None:
        self.root = Path(folder).resolve()
        if not self.root.is_dir():
            raise DatasetFolderError(f"{folder}: not a folder")
        self.meta: dict[str, Any] = read_meta(self.root)
        self.skipped = 0  # listed files that are missing, not .npy, or outside the folder
        rows = self._manifest_rows() if manifest_path(self.root).is_file() else self._folder_rows()
        self.by_user: dict[str, list[Recording]] = {}
        for rec in rows:
            if _inside(self.root, rec.path) is None:
                self.skipped += 1
                continue
            self.by_user.setdefault(rec.user, []).append(rec)
        if self.skipped:
            log.warning(
                "%s: skipped %d listed files (missing, not .npy, or outside the folder)",
                self.root, self.skipped,
            )

    def _manifest_rows(self) -> list[Recording]:
        rows = read_manifest(self.root, required=("path", "user"), empty_ok=True)
        return [
            Recording(path=r["path"], user=r["user"], split=r.get("split") or None,
                      conditions={k: x for k, v in r.items() if k not in BASE_COLUMNS and k and v
                                  and (x := _value(v)) is not None})
            for r in rows if r.get("path") and r.get("user")
        ]

    def _folder_rows(self) -> list[Recording]:
        """The ImageFolder layout: one folder per user of .npy files (PNGs need a colour map; not served)."""
        return [Recording(path=f"{d.name}/{f.name}", user=d.name, split=None)
                for d in image_folder_users(self.root)
                for f in image_folder_files(d) if f.suffix.lower() == ".npy"]

    @property
    def users(self) -> list[str]:
        return sorted(self.by_user)

    def recordings(self, user: str, split: str | None = None) -> list[Recording]:
        """The user's recordings in manifest order (an empty list for an unknown user)."""
        recs = self.by_user.get(user, [])
        return [r for r in recs if r.split == split] if split else list(recs)

    def axes(self, shape: tuple[int, int] | None = None) -> dict[str, Any]:
        return spectrogram_axes(self.meta, shape)

    def load(self, rec: Recording) -> np.ndarray:
        """The recording as float32 dB, (C, doppler, time); refuses pickles, bad shapes and non-finite
        values."""
        path = _inside(self.root, rec.path)
        if path is None:
            raise RecordingError(f"{rec.path}: missing or outside the dataset folder")
        try:
            arr = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{rec.path}: not a readable .npy file ({exc})") from exc
        if arr.dtype.kind not in "fiu" or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] in (1, 3))):
            raise RecordingError(
                f"{rec.path}: expected a numeric (doppler, time) or (C, doppler, time) array"
            )
        arr = arr.astype(np.float32)[None] if arr.ndim == 2 else arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise RecordingError(f"{rec.path}: contains NaN or inf")
        return arr
