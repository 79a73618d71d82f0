"""Real recordings for the web page: an index of a dataset folder's .npy files per user, read without pickles.

The service never imports training/, so this reads the dataset contract (meta.json, manifest.csv, <user>/<id>.npy)
itself. Only .npy files inside the folder are served: a manifest row that points outside it (`..`, an absolute
path, a symlink out) or at another file type is skipped and counted, never opened.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.axes import spectrogram_axes

log = logging.getLogger("dopplergen.examples")

BASE_COLUMNS = ("path", "user", "split", "group", "source")  # the rest of a manifest's columns are conditions


class DatasetFolderError(ValueError):
    """The dataset folder cannot be indexed (no manifest and no user folders, unreadable manifest)."""


class RecordingError(ValueError):
    """One listed recording cannot be served (unreadable, pickled, wrong shape, NaN/inf)."""


@dataclass(frozen=True)
class Recording:
    path: str  # relative to the dataset folder, as listed
    user: str
    split: str | None
    conditions: dict[str, Any] = field(default_factory=dict)  # numeric manifest values as floats


def _value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _inside(root: Path, rel: str) -> Path | None:
    """`root / rel` resolved, or None when it leaves `root` or is not an existing .npy file."""
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
        return None
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() != ".npy" or not path.is_file():
        return None
    return path


class ExampleStore:
    """Recordings per user of one dataset folder, indexed once when the service starts."""

    def __init__(self, folder: str | Path) -> None:
        self.root = Path(folder).resolve()
        if not self.root.is_dir():
            raise DatasetFolderError(f"{folder}: not a folder")
        meta_file = self.root / "meta.json"
        try:
            self.meta: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        except (OSError, ValueError) as exc:
            raise DatasetFolderError(f"{meta_file}: {exc}") from exc
        self.skipped = 0  # listed files that are missing, not .npy, or outside the folder
        rows = self._manifest_rows() if (self.root / "manifest.csv").is_file() else self._folder_rows()
        self.by_user: dict[str, list[Recording]] = {}
        for rec in rows:
            if _inside(self.root, rec.path) is None:
                self.skipped += 1
                continue
            self.by_user.setdefault(rec.user, []).append(rec)
        if self.skipped:
            log.warning("%s: skipped %d listed files (missing, not .npy, or outside the folder)", self.root,
                        self.skipped)

    def _manifest_rows(self) -> list[Recording]:
        manifest = self.root / "manifest.csv"
        try:
            with open(manifest, newline="") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetFolderError(f"{manifest}: {exc}") from exc
        if rows and not {"path", "user"} <= set(rows[0]):
            raise DatasetFolderError(f"{manifest}: needs the columns path,user")
        return [
            Recording(path=r["path"], user=r["user"], split=r.get("split") or None,
                      conditions={k: _value(v) for k, v in r.items() if k not in BASE_COLUMNS and k and v})
            for r in rows if r.get("path") and r.get("user")
        ]

    def _folder_rows(self) -> list[Recording]:
        """The ImageFolder layout: one folder per user of .npy files (PNGs need a colour map; not served)."""
        users = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not users:
            raise DatasetFolderError(f"{self.root}: no manifest.csv and no user folders")
        return [Recording(path=f"{d.name}/{f.name}", user=d.name, split=None)
                for d in users for f in sorted(d.glob("*.npy"))]

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
        """The recording as float32 dB, (C, doppler, time); refuses pickles, bad shapes and non-finite values."""
        path = _inside(self.root, rec.path)
        if path is None:
            raise RecordingError(f"{rec.path}: missing or outside the dataset folder")
        try:
            arr = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{rec.path}: not a readable .npy file ({exc})") from exc
        if arr.dtype.kind not in "fiu" or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[0] in (1, 3))):
            raise RecordingError(f"{rec.path}: expected a numeric (doppler, time) or (C, doppler, time) array")
        arr = arr.astype(np.float32)[None] if arr.ndim == 2 else arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise RecordingError(f"{rec.path}: contains NaN or inf")
        return arr
