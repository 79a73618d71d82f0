"""A dataset folder's image size against an architecture preset's: the check both a training run and its
--dry-run make, with advice that holds whether the data was simulated or imported."""

from __future__ import annotations

from pathlib import Path

from models.dataset_folder import read_meta
from models.presets import PRESETS
from models.safe_files import DatasetError


def presets_of_size(size: int) -> list[str]:
    return [name for name, p in PRESETS.items() if p.image_size == size]


def mismatch(data: str | Path, hw: tuple[int, ...], preset: str) -> str | None:
    """Why a dataset of images `hw` cannot train `preset` (None: it can)."""
    want = PRESETS[preset].image_size
    if tuple(hw) == (want, want):
        return None
    fits = presets_of_size(hw[0]) if hw[0] == hw[-1] else []
    pick = f"pick --preset {' or '.join(fits)} (the data's size), or " if fits else ""
    return (f"{data}: images are {hw[0]}x{hw[-1]} but --preset {preset} expects {want}x{want}; {pick}"
            f"write the data at {want}x{want}: re-import it with `dopplergen import ... --size {want}` "
            f"(simulated data: `dopplergen simulate --size {want}`)")


def image_size(data: str | Path) -> tuple[int, int]:
    """The folder's image size: meta.json's "image_size", else its first recording's shape."""
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(f"--data {root}: not a directory (a dataset folder: meta.json + manifest.csv, or "
                           "one folder of recordings per person)")
    size = read_meta(root).get("image_size")
    if size:
        return int(size[0]), int(size[-1])
    from training.data.dataset import load_dataset

    shape = load_dataset(root).x.shape
    return int(shape[-2]), int(shape[-1])


def check_preset_size(data: str | Path, preset: str, hw: tuple[int, ...] | None = None) -> None:
    """Raise a DatasetError when `data`'s images (`hw`, else read from the folder) do not fit `preset`."""
    problem = mismatch(data, hw if hw is not None else image_size(data), preset)
    if problem:
        raise DatasetError(problem)
