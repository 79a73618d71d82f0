"""One recording file -> a (C, H, W) float32 dB array, or an error naming the file and the rule.

The per-file rules of the dataset folder (docs/simulator.md, "Dataset folder"), shared by every way data
enters: the dataset reader (its manifest and ImageFolder paths), `dopplergen enroll`, the service's
`POST /users` (and the web page's enrol form); `dopplergen import` opens its images and arrays through the
same checks (models/safe_files.py). So an upload is read exactly like a training file:

- `.npy`: dB relative to the peak (<= 0), finite, never pickled, checked from its header before it is read.
- PNG / JPEG (by content, at most MAX_PIXELS): a grey image is dB (0..max -> -dyn_range_db..0). A colour image
  is a colour-mapped spectrogram: inverted through the named matplotlib colour map, or through the one that
  fits best (models/colormap.py) when none is named; an image no map fits is refused, naming the maps that
  came closest. A colour image is never read as its luminance. (A 3-channel pipeline keeps each RGB channel
  as its own dB channel.)

The one dispatch by file type is `read_file`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models import colormap as cmaps
from models.raw.files import RAW_SUFFIXES, npy_is_complex
from models.safe_files import MAX_PIXELS, DatasetError, load_image, load_npy, read_bytes

__all__ = ["DatasetError", "IMAGE_SUFFIXES", "MAX_PIXELS", "Reading", "read_file", "read_recording"]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
# every file a person's folder or an upload may hold (raw recordings: models/raw)
IMAGE_SUFFIXES = (*PICTURE_SUFFIXES, ".npy", *RAW_SUFFIXES)
AUTO = ("", "auto")  # colour-map names that mean "detect it"
RANK_PIXELS = 65_536  # colour maps are ranked on at most this many pixels (a strided view of a big image)


@dataclass(frozen=True)
class Reading:
    """One file read: its dB array, and the colour map its colours were read through (None: grey or .npy)."""

    db: np.ndarray  # (C, H, W) float32 dB
    colormap: str | None = None
    detected: bool = False  # the map was chosen by fit, not named
    error_255: float = 0.0  # mean inversion error of the colours, in 8-bit levels

    @property
    def note(self) -> str:
        """How the colours were read, for a summary line ('' for grey images and arrays)."""
        if self.colormap is None:
            return ""
        how = "detected" if self.detected else "as named"
        return f"colours read through the {self.colormap} colour map ({how}; error {self.error_255:.1f}/255)"


def read_npy(src: Path | bytes, rel: str) -> np.ndarray:
    """A .npy of dB relative to the peak (<= 0): numeric, finite, non-empty, never pickled."""
    arr = load_npy(read_bytes(src, rel), rel).astype(np.float32)
    if arr.max() > 1e-3:
        raise DatasetError(
            f"{rel}: values up to {arr.max():.3g} > 0; expected dB relative to the peak (<= 0)"
        )
    return arr


def _fits(rgb: np.ndarray, name: str) -> tuple[cmaps.Inversion, cmaps.Problem | None]:
    inv = cmaps.invert(rgb, name)
    return inv, cmaps.diagnose(inv, name)


def _ranked(rgb: np.ndarray) -> list[tuple[str, float]]:
    """Every candidate map by mean inversion error (of 255), on a strided view of a large image."""
    h, w = rgb.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(h * w / RANK_PIXELS))))
    return cmaps.rank_candidates(rgb[::step, ::step], top=len(cmaps.CANDIDATES))


def _refusal(rel: str, rgb: np.ndarray, problem: cmaps.Problem, named: str | None,
             ranked: list[tuple[str, float]] | None = None) -> DatasetError:
    ranked = ranked if ranked is not None else _ranked(rgb)
    best = ", ".join(f"{n} ({e:.1f}/255)" for n, e in ranked[:3])
    if problem.kind == "frame":
        why = (f"{problem.message}; crop it to the spectrogram alone (figures with axes: dopplergen import "
               "--crop auto)")
    elif named:
        why = f"{problem.message}; the maps that fit best are {best}"
    else:
        why = (f"a colour image that fits no known colour map well enough (a usable one is within "
               f"{255 * cmaps.FIT_OK:.0f}/255, at most {cmaps.OFF_OK:.0%} of pixels off the map); the maps "
               f"that fit best are {best}")
    return DatasetError(f"{rel}: {why}; name the colour map it was drawn with, or send a grey image "
                        "(0..max = -dyn_range..0 dB)")


def colours_to_db(rgb: np.ndarray, rel: str, dyn_range_db: float,
                  colormap: str | None = None) -> tuple[np.ndarray, str, bool, float]:
    """(H, W, 3) uint8 colours -> ((H, W) dB, map name, detected?, error of 255) through `colormap`, or the
    best-fitting candidate map when it is None; DatasetError when the image does not fit."""
    named = None if colormap is None or colormap.lower() in AUTO else colormap
    if named is not None:
        try:
            cmaps.check_name(named)
        except ValueError as e:
            raise DatasetError(f"{rel}: {e}") from None
        inv, problem = _fits(rgb, named)
        if problem is not None:
            raise _refusal(rel, rgb, problem, named)
        name, detected = named, False
    else:
        ranked = _ranked(rgb)
        name, detected = ranked[0][0], True
        inv, problem = _fits(rgb, name)
        if problem is not None:
            raise _refusal(rel, rgb, problem, None, ranked)
    db = (inv.value - 1.0) * dyn_range_db
    return db.astype(np.float32), name, detected, 255 * inv.mean_error


def read_image(src: Path | bytes, rel: str, channels: int, dyn_range_db: float,
               colormap: str | None = None) -> Reading:
    """A PNG or JPEG -> dB. Row 0 = the top = most positive Doppler. Grey: 0..max -> -dyn_range_db..0;
    colour: its colour map inverted (1 channel), or each RGB channel as grey (3 channels)."""
    img = load_image(read_bytes(src, rel), rel)
    if img.ndim == 2:  # grey
        if colormap is not None and colormap.lower() not in AUTO and colormap != "gray":
            db, name, detected, err = colours_to_db(cmaps.to_rgb_uint8(img), rel, dyn_range_db, colormap)
            return Reading(db, name, detected, err)
        return Reading(img * dyn_range_db - dyn_range_db)
    if channels == 3:  # a 3-channel pipeline: every channel its own dB image, as it was trained
        return Reading(np.moveaxis(img.astype(np.float32) / 255.0 * dyn_range_db - dyn_range_db, -1, 0))
    db, name, detected, err = colours_to_db(img, rel, dyn_range_db, colormap)
    return Reading(db, name, detected, err)


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


def read_file(src: Path | bytes, name: str, channels: int, dyn_range_db: float,
              size: tuple[int, int] | None = None, colormap: str | None = None) -> Reading:
    """A recording (by `name`'s suffix) -> (channels, H, W) float32 dB, resized to `size` when given.

    `colormap`: the matplotlib map colour images were drawn with (None or "auto": the best-fitting one).
    This is the single dispatch by file type: a reader of raw radar recordings (models/raw.py: .dat, and
    complex arrays, whose .npy header says complex) returns its (doppler, time) dB here like the others.
    """
    if colormap is not None and not isinstance(colormap, str):
        raise DatasetError(f"{name}: the colour map must be a matplotlib name, got {colormap!r}")
    suffix = Path(name).suffix.lower()
    if suffix in RAW_SUFFIXES or (suffix == ".npy" and npy_is_complex(src if isinstance(src, bytes) else
                                                                    Path(src))):
        reading = Reading(read_raw_recording(src, name, size, dyn_range_db))
    elif suffix == ".npy":
        reading = Reading(read_npy(src, name))
    elif suffix in PICTURE_SUFFIXES:
        reading = read_image(src, name, channels, dyn_range_db, colormap)
    else:
        raise DatasetError(f"{name}: unsupported file type (expected {', '.join(IMAGE_SUFFIXES)})")
    arr = to_channels(reading.db, channels, name)
    if size is not None and tuple(arr.shape[1:]) != tuple(size):
        arr = resize(arr.astype(np.float32), tuple(size))
    return Reading(arr.astype(np.float32, copy=False), reading.colormap, reading.detected, reading.error_255)


def read_raw_recording(src: Path | bytes, name: str, size: tuple[int, int] | None,
                       dyn_range_db: float) -> np.ndarray:
    """A raw radar recording (models/raw: .dat, complex .npy/.mat/.h5/.npz) through the field's chain with its
    own parameters; a long one gives its first window of the chain's default length."""
    from models.raw import ChainConfig, raw_spectrograms

    n = int(size[0]) if size is not None else 64
    try:
        windows = raw_spectrograms(src, name, ChainConfig(size=n, dyn_range_db=dyn_range_db))
    except DatasetError as e:
        if "pass --" not in str(e):
            raise
        raise DatasetError(f"{e} (a raw recording enrols only with its radar parameters inside the file, "
                           "as a .dat has them; else convert it first: dopplergen import SRC --out DST "
                           "--size N --carrier-hz ... --prf-hz ..., docs/import.md)") from None
    if not windows:
        raise DatasetError(f"{name}: the recording is too short for one spectrogram")
    return windows[0][0]


def read_recording(src: Path | bytes, name: str, channels: int, dyn_range_db: float,
                   size: tuple[int, int] | None = None, colormap: str | None = None) -> np.ndarray:
    """read_file's array alone."""
    return read_file(src, name, channels, dyn_range_db, size, colormap).db
