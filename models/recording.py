"""One recording file (.npy in dB, or .png grey levels) -> a (C, H, W) float32 dB array, or an error naming
it.

The per-file rules of the dataset folder (docs/simulator.md, "Dataset folder"), shared by the dataset reader,
`dopplergen enroll` and the service's `POST /users`, so an upload is read exactly like a training file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".npy")


class DatasetError(ValueError):
    """A dataset folder or one of its files is unusable; the message names the file."""


def _source(src: Path | bytes):
    return io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src


def read_npy(src: Path | bytes, rel: str) -> np.ndarray:
    """A .npy of dB relative to the peak (<= 0): numeric, finite, never pickled."""
    if isinstance(src, (bytes, bytearray)):
        head = bytes(src[:6])
    else:
        try:
            with open(src, "rb") as f:
                head = f.read(6)
        except FileNotFoundError:
            raise DatasetError(f"{rel}: the file is missing") from None
    if head != b"\x93NUMPY":  # numpy would call anything else "pickled data"
        raise DatasetError(f"{rel}: not a .npy file (no NumPy header): save arrays with numpy.save")
    try:
        arr = np.load(_source(src), allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{rel}: the file is missing") from None
    except Exception as e:  # noqa: BLE001 - numpy raises several types for a corrupt file
        raise DatasetError(f"{rel}: cannot read .npy ({e})") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise DatasetError(f"{rel}: expected a numeric array, got "
                           f"{getattr(arr, 'dtype', type(arr).__name__)}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DatasetError(f"{rel}: contains NaN or inf")
    if arr.max(initial=-np.inf) > 1e-3:
        raise DatasetError(
            f"{rel}: values up to {arr.max():.3g} > 0; expected dB relative to the peak (<= 0)"
        )
    return arr


def read_png(src: Path | bytes, rel: str, channels: int, dyn_range_db: float) -> np.ndarray:
    """PNG -> dB: grey (or each RGB channel) 0..max -> -dyn_range_db..0. Row 0 = the top = most positive
    Doppler."""
    try:
        with Image.open(_source(src)) as im:
            im.load()
            if channels == 3:
                im = im.convert("RGB")
            elif im.mode not in ("L", "I", "I;16", "F"):
                im = im.convert("L")  # colour-mapped RGB read as luminance; use channels=3 to keep colour
            full = 65535.0 if im.mode.startswith("I") else 255.0
            arr = np.asarray(im, dtype=np.float32)
    except FileNotFoundError:
        raise DatasetError(f"{rel}: the file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{rel}: cannot read image ({e})") from None
    if im.mode == "F":
        full = 1.0
    arr = arr / full * dyn_range_db - dyn_range_db
    return np.moveaxis(arr, -1, 0) if arr.ndim == 3 else arr


def to_channels(arr: np.ndarray, channels: int, rel: str) -> np.ndarray:
    """(H, W) or (C, H, W) -> (channels, H, W); one channel is repeated, any other mismatch is an error."""
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DatasetError(
            f"{rel}: expected (doppler, time) or (channels, doppler, time), got shape {arr.shape}"
        )
    if arr.shape[0] == channels:
        return arr
    if arr.shape[0] == 1:
        return np.repeat(arr, channels, axis=0)
    raise DatasetError(f"{rel}: has {arr.shape[0]} channels, asked for {channels}")


def resize(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (C, H, W) to (C, *hw) in dB (for real data recorded at another resolution)."""
    return np.stack([
        np.asarray(Image.fromarray(c, mode="F").resize((hw[1], hw[0]), Image.BILINEAR)) for c in arr
    ])


def read_recording(src: Path | bytes, name: str, channels: int, dyn_range_db: float,
                   size: tuple[int, int] | None = None) -> np.ndarray:
    """A .npy or .png (by `name`'s suffix) -> (channels, H, W) float32 dB, resized to `size` when given."""
    suffix = Path(name).suffix.lower()
    if suffix == ".png":
        arr = read_png(src, name, channels, dyn_range_db)
    elif suffix == ".npy":
        arr = read_npy(src, name)
    else:
        raise DatasetError(f"{name}: unsupported file type (expected .png or .npy)")
    arr = to_channels(arr, channels, name)
    if size is not None and tuple(arr.shape[1:]) != tuple(size):
        arr = resize(arr, tuple(size))
    return arr.astype(np.float32, copy=False)
