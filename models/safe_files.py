"""Opening a recording file without trusting it: checked before it costs memory or time.

- Images are PNG or JPEG by their content (not their name); their size is read from the header (PNG's IHDR,
  JPEG's SOF) and refused above MAX_PIXELS before Pillow decodes a pixel, whatever Pillow's own
  decompression-bomb limit says.
- A .npy is parsed header first (numpy.lib.format): never pickles, a numeric dtype, no zero-size dimension,
  at most `max_values` values (shape arithmetic in Python integers, so (0, 10**12) cannot overflow), and the
  data must be all there before it is read.
- Values must be finite.

Every refusal is a DatasetError naming the file and the rule. Shared by the per-file reader
(models/recording.py: dataset reader, `dopplergen enroll`, `POST /users`) and `dopplergen import`.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset folder or one of its files is unusable; the message names the file."""


MAX_PIXELS = 4_000_000  # width x height of an image (a 2000 x 2000 figure); far below Pillow's 89 M
MAX_NPY_VALUES = 4 * MAX_PIXELS  # elements of a .npy (a 4-megapixel RGBA array)
IMAGE_FORMATS = ("PNG", "JPEG")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry height and width
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_OTHER = ((b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"GIF8", "a GIF image"),
          (b"BM", "a BMP image"), (b"\x93NUMPY", "a .npy array"), (b"RIFF", "a WebP/RIFF file"),
          (b"%PDF", "a PDF"), (b"\x89HDF", "an HDF5 file"))


def read_bytes(src: Path | bytes, rel: str) -> bytes:
    """An upload's bytes, or a file's; DatasetError naming `rel` when it is missing or unreadable."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    try:
        return Path(src).read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{rel}: the file is missing") from None
    except OSError as e:
        raise DatasetError(f"{rel}: cannot read ({e.strerror or e})") from None


def _what(data: bytes) -> str:
    for magic, name in _OTHER:
        if data.startswith(magic):
            return name
    return "unknown content"


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's first start-of-frame segment, or None when there is none."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers: no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header: broken
            return None
        i += 2 + length
    return None


def image_header(data: bytes, rel: str) -> tuple[str, int, int]:
    """(format, width, height) read from the first bytes; DatasetError when it is not a PNG or JPEG, or too
    many pixels (nothing is decoded)."""
    if data.startswith(PNG_MAGIC):
        if data[12:16] != b"IHDR" or len(data) < 24:
            raise DatasetError(f"{rel}: cannot read image: a PNG without its IHDR header (truncated or "
                               "damaged)")
        fmt, (width, height) = "PNG", struct.unpack(">II", data[16:24])
    elif data.startswith(b"\xff\xd8\xff"):
        size = _jpeg_size(data)
        if size is None:
            raise DatasetError(f"{rel}: cannot read image: a JPEG without a readable frame header "
                               "(truncated or damaged)")
        fmt, (width, height) = "JPEG", size
    else:
        raise DatasetError(f"{rel}: cannot read image: not a PNG or JPEG by its content ({_what(data)}); "
                           f"only {' and '.join(IMAGE_FORMATS)} images and .npy arrays are read")
    if width == 0 or height == 0:
        raise DatasetError(f"{rel}: an empty image ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise DatasetError(f"{rel}: {width}x{height} pixels is over the limit of {MAX_PIXELS:,} "
                           f"({MAX_PIXELS / 1e6:g} megapixels); refused before decoding: resize it first")
    return fmt, width, height


def load_image(data: bytes, rel: str) -> np.ndarray:
    """A PNG or JPEG as (H, W) float32 grey in [0, 1] (grey modes, and colour images whose channels are all
    equal) or (H, W, 3) uint8 colour (alpha dropped, palettes expanded)."""
    from PIL import Image, UnidentifiedImageError

    fmt, width, height = image_header(data, rel)
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as im:
            if im.format != fmt or im.size != (width, height):  # the header check and Pillow disagree
                raise DatasetError(f"{rel}: the {fmt} header says {width}x{height}, Pillow reads "
                                   f"{im.format} {im.size[0]}x{im.size[1]}")
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L"):
                grey = np.asarray(im, dtype=np.float32) / 65535.0
            elif im.mode in ("1", "L", "LA"):
                grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
                if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                    return rgb[..., 0].astype(np.float32) / 255.0
                return rgb
    except DatasetError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{rel}: cannot read image ({fmt}, {type(e).__name__}: {e})") from None
    return np.clip(grey, 0.0, 1.0)


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # where the data starts


def npy_header(data: bytes, rel: str) -> NpyHeader:
    """The .npy header, parsed without reading the data; DatasetError for anything numpy would unpickle."""
    from numpy.lib import format as npformat

    if not data.startswith(b"\x93NUMPY"):  # numpy would call anything else "pickled data"
        raise DatasetError(f"{rel}: not a .npy file (no NumPy header; {_what(data)}): save arrays with "
                           "numpy.save")
    f = io.BytesIO(data)
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} (1.0 and 2.0 are read)")
    except ValueError as e:
        raise DatasetError(f"{rel}: cannot read the .npy header ({e})") from None
    return NpyHeader(tuple(int(n) for n in shape), dtype, bool(fortran), f.tell())


def check_npy_header(head: NpyHeader, rel: str, max_values: int = MAX_NPY_VALUES) -> None:
    """The rules a header must pass before its data is read: numeric, not empty, not too large."""
    if head.dtype.hasobject or head.dtype.kind not in "biuf":
        kind = "Python objects (pickles are never loaded)" if head.dtype.hasobject else str(head.dtype)
        if head.dtype.kind == "c":
            kind += " (complex: a raw recording, not a spectrogram in dB)"
        raise DatasetError(f"{rel}: expected a real numeric array, got {kind}")
    if not head.shape or 0 in head.shape:
        raise DatasetError(f"{rel}: an empty array (shape {head.shape}): a recording needs values in every "
                           "dimension")
    n = math.prod(head.shape)  # Python integers: no overflow for (10**12, 10**12)
    if n > max_values:
        raise DatasetError(f"{rel}: shape {head.shape} holds {n:,} values, over the limit of {max_values:,}")


def load_npy(data: bytes, rel: str, max_values: int = MAX_NPY_VALUES) -> np.ndarray:
    """A .npy's real numeric array (any shape with no zero dimension), checked from its header before the data
    is read, and finite."""
    head = npy_header(data, rel)
    check_npy_header(head, rel, max_values)
    need = head.offset + math.prod(head.shape) * head.dtype.itemsize
    if len(data) < need:
        raise DatasetError(f"{rel}: truncated .npy ({len(data)} bytes, the header promises {need})")
    flat = np.frombuffer(data, dtype=head.dtype, count=math.prod(head.shape), offset=head.offset)
    arr = flat.reshape(head.shape, order="F" if head.fortran_order else "C")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{rel}: contains NaN or inf")
    return np.array(arr)  # a writable copy in native order
