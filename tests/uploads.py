"""Files for the reader's tests on every way in (issue 31): a jet-coloured spectrogram of known dB, and the
bad uploads that used to crash or poison (each with the words of the rule that refuses it)."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import matplotlib
import numpy as np
from PIL import Image

DYN = 60.0


def true_db(seed: int, shape=(32, 32)) -> np.ndarray:
    """A spectrogram-like dB field: a torso line and a limb sinusoid over a noisy floor, peak at 0 dB."""
    rng = np.random.default_rng(seed)
    h, w = shape
    f = (np.arange(h)[:, None] + 0.5) / h
    t = (np.arange(w)[None, :] + 0.5) / w
    torso = 0.4 + 0.05 * (seed % 3)
    limb = torso + 0.2 * np.sin(2 * np.pi * 2 * t + seed)
    power = np.exp(-((f - torso) ** 2) / 0.002) + 0.3 * np.exp(-((f - limb) ** 2) / 0.003)
    db = 10 * np.log10(power + 1e-5 * (1 + rng.random(shape)))
    return np.clip(db - db.max(), -DYN, 0.0).astype(np.float32)


def coloured_png(db: np.ndarray, name: str = "jet", fmt: str = "PNG") -> bytes:
    """dB -> an 8-bit image through matplotlib's map `name`, -DYN..0 dB spanning the whole map."""
    rgb = np.rint(matplotlib.colormaps[name]((db + DYN) / DYN)[..., :3] * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of any size, a few KB per 100 megapixels (a decompression bomb)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4", total: int = 128) -> bytes:
    """A .npy file of `total` bytes: the magic, a header promising `shape`, no data (written by hand, as numpy
    would refuse to save it)."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header = header.ljust(total - 10 - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npy_of(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def nan_tiff() -> bytes:
    """A float TIFF full of NaN (saved under a .png name by the tests)."""
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), np.nan, np.float32)).save(buf, format="TIFF")
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def bad_uploads() -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, a regex of the refusal's rule): issue 31's list."""
    return {
        "nan.png": (nan_tiff(), "not a PNG or JPEG by its content"),
        "bomb.png": (blank_png(20000, 20000), "20000x20000 pixels is over the limit"),
        "huge.npy": (npy_header_only((0, 10**12)), r"empty array \(shape \(0, 1000000000000\)\)"),
        "big.png": (blank_png(12000, 12000), "12000x12000 pixels is over the limit"),
        "empty.npy": (npy_of(np.zeros((0, 64), np.float32)), r"empty array \(shape \(0, 64\)\)"),
        "objects.npy": (npy_header_only((3,), "|O"), "Python objects"),
    }
