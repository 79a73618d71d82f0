"""Encode one dB spectrogram (C, H, W) as PNG (8/16-bit grayscale or colour-mapped, dB scale in text chunks)
or .npy."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

NPY_MEDIA_TYPE = "application/x-npy"
PNG_MEDIA_TYPE = "image/png"


@dataclass(frozen=True)
class Encoded:
    data: bytes
    media_type: str
    dtype: str
    mapping: str


def png_mapping(dyn_range_db: float, levels: int) -> str:
    """The pixel -> dB rule written into the PNG and the response, e.g. `db = -60 + 60 * value / 255`."""
    r = f"{dyn_range_db:g}"
    return f"db = -{r} + {r} * value / {levels}"


def db_to_levels(db: np.ndarray, dyn_range_db: float, levels: int) -> np.ndarray:
    """Linear map of [-dyn_range_db, 0] dB onto 0..levels (black = -dyn_range_db, white = 0 dB)."""
    x = (np.clip(db, -dyn_range_db, 0.0) + dyn_range_db) / dyn_range_db
    return np.rint(x * levels)


@lru_cache(maxsize=16)
def _colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table from matplotlib (imported only when a colour map is asked for)."""
    import matplotlib

    rgba = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)


def encode_png(
    db: np.ndarray, dyn_range_db: float, bit_depth: int = 8, colormap: str | None = None,
    text: dict | None = None
) -> Encoded:
    """PNG of a (C, H, W) dB array: rows are Doppler bins, columns time frames, as stored in the dataset."""
    channels = db.shape[0]
    if bit_depth not in (8, 16):
        raise ValueError("bit_depth must be 8 or 16")
    if (colormap or channels == 3) and bit_depth != 8:
        raise ValueError("colour PNGs are 8-bit")
    levels = 2**bit_depth - 1
    q = db_to_levels(db, dyn_range_db, levels)  # (C, H, W)
    if channels == 1 and colormap:
        img = Image.fromarray(_colormap_lut(colormap)[q[0].astype(np.uint8)])  # (H, W, 3)
        dtype = "uint8"
    elif channels == 1:
        arr = q[0].astype(np.uint16 if bit_depth == 16 else np.uint8)  # (H, W)
        img = Image.fromarray(arr)
        dtype = str(arr.dtype)
    elif channels == 3:
        img = Image.fromarray(np.ascontiguousarray(q.transpose(1, 2, 0).astype(np.uint8)))  # (H, W, 3)
        dtype = "uint8"
    else:
        raise ValueError(f"cannot write a {channels}-channel spectrogram as PNG; use npy")
    mapping = png_mapping(dyn_range_db, levels)
    if colormap:
        mapping += f" (value = position in colour map {colormap!r})"
    info = PngInfo()
    for key, value in {"dyn_range_db": f"{dyn_range_db:g}", "mapping": mapping, **(text or {})}.items():
        info.add_text(key, str(value))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=1)  # speed over a few % of size
    return Encoded(buf.getvalue(), PNG_MEDIA_TYPE, dtype, mapping)


def encode_npy(db: np.ndarray) -> Encoded:
    """The float32 dB array as a .npy file (np.load reads it back; no pickles)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(db, dtype=np.float32), allow_pickle=False)
    return Encoded(buf.getvalue(), NPY_MEDIA_TYPE, "float32", "values are dB relative to the peak")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_png_db(png: bytes) -> np.ndarray:
    """Inverse of encode_png for grayscale images (used by tests and clients): PNG bytes -> (H, W) dB."""
    img = Image.open(io.BytesIO(png))
    r = float(img.text["dyn_range_db"])
    arr = np.asarray(img)
    levels = 65535 if arr.dtype == np.uint16 else 255
    return (arr.astype(np.float32) / levels * r - r).astype(np.float32)
