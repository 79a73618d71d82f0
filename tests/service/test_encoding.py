"""PNG / npy encoding: the dB scale survives the round trip and is written into the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.encoding import decode_png_db, encode_npy, encode_png


@pytest.fixture
def db() -> np.ndarray:
    # (1, 16, 8), out of range too
    return np.linspace(-70.0, 5.0, 2 * 16 * 8, dtype=np.float32).reshape(2, 16, 8)[:1]


@pytest.mark.parametrize(("bits", "step"), [(8, 60 / 255), (16, 60 / 65535)])
def test_png_roundtrip_within_one_level(db, bits, step):
    enc = encode_png(db, 60.0, bit_depth=bits, text={"seed": 3})
    img = Image.open(io.BytesIO(enc.data))
    assert img.size == (8, 16) and img.text["dyn_range_db"] == "60" and img.text["seed"] == "3"
    expected = np.clip(db[0], -60.0, 0.0)
    assert np.abs(decode_png_db(enc.data) - expected).max() <= step / 2 + 1e-4


def test_png_colormap_and_three_channels(db):
    rgb = encode_png(db, 60.0, colormap="magma")
    assert Image.open(io.BytesIO(rgb.data)).mode == "RGB"
    three = encode_png(np.repeat(db, 3, axis=0), 60.0)
    assert np.asarray(Image.open(io.BytesIO(three.data))).shape == (16, 8, 3)
    with pytest.raises(ValueError):
        encode_png(db, 60.0, bit_depth=16, colormap="magma")


def test_npy_is_exact_float32(db):
    enc = encode_npy(db.astype(np.float64))
    back = np.load(io.BytesIO(enc.data), allow_pickle=False)
    assert back.dtype == np.float32 and np.array_equal(back, db)
