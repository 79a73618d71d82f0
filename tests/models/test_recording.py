"""models/recording.py: how one recording file is read (the one reader of every way in, issue 31)."""

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from models.recording import DatasetError, read_file, read_recording
from tests.uploads import (
    DYN,
    bad_uploads,
    blank_png,
    coloured_png,
    npy_header_only,
    npy_of,
    true_db,
)


def test_a_text_file_named_npy_is_called_what_it_is():
    """numpy calls any non-.npy bytes "pickled data"; the reader says the file is not a .npy."""
    from models.recording import read_npy

    with pytest.raises(DatasetError, match="not a .npy file") as info:
        read_npy(b"time,doppler\n1,2\n", "notes.npy")
    assert "pickled" not in str(info.value)


# ---- one reader for every way in (issue 31) ----------------------------------------------------------------


@pytest.mark.parametrize("named", [None, "auto", "jet"])
def test_a_jet_png_is_inverted_within_1_db_named_or_detected(named):
    truth = true_db(1)
    r = read_file(coloured_png(truth), "rec.png", 1, DYN, colormap=named)
    assert r.db.shape == (1, 32, 32) and r.colormap == "jet" and r.detected == (named != "jet")
    assert np.abs(r.db[0] - truth).mean() < 1.0
    assert "jet colour map" in r.note


def test_a_jpeg_through_turbo_is_detected_and_a_grey_image_is_db():
    truth = true_db(2, (128, 128))  # JPEG's chroma subsampling: smaller sharp images leave the map's curve
    r = read_file(coloured_png(truth, "turbo", "JPEG"), "rec.jpg", 1, DYN)
    assert r.colormap == "turbo" and np.abs(r.db[0] - truth).mean() < 1.0
    truth = true_db(2)
    grey = np.rint((truth + DYN) / DYN * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    g = read_file(buf.getvalue(), "grey.png", 1, DYN)
    assert g.colormap is None and g.note == "" and np.abs(g.db[0] - truth).max() < 0.2


def test_a_colour_image_no_map_fits_is_refused_naming_the_file_and_the_best_maps():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # colours of no map
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    with pytest.raises(DatasetError, match=r"noise\.png: a colour image that fits no known colour map.*"
                                           r"fit best are \w+ \(\d+\.\d/255\)") as info:
        read_file(buf.getvalue(), "noise.png", 1, DYN)
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match=r"rec\.png: does not fit the viridis colour map.*best are jet"):
        read_file(coloured_png(true_db(3)), "rec.png", 1, DYN, colormap="viridis")
    with pytest.raises(DatasetError, match="unknown colour map 'parula'"):
        read_file(coloured_png(true_db(3)), "rec.png", 1, DYN, colormap="parula")


def test_three_channel_pipelines_keep_each_rgb_channel_as_db():
    rgb = np.zeros((8, 8, 3), np.uint8) + np.uint8([255, 0, 51])
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    assert np.allclose(read_recording(buf.getvalue(), "a.png", 3, DYN)[:, 0, 0], [0.0, -60.0, -48.0])


@pytest.mark.parametrize("name", sorted(bad_uploads()))
def test_each_bad_upload_is_refused_naming_the_file_and_the_rule(name):
    data, rule = bad_uploads()[name]
    with pytest.raises(DatasetError, match=rf"^{name.replace('.', '[.]')}: .*{rule}") as info:
        read_recording(data, name, 1, DYN, (32, 32))
    assert "\n" not in str(info.value)


def test_a_12000_square_png_is_refused_without_decoding_it(monkeypatch):
    """17.5 KB that took 11.6 s and 1.8 GB: now refused from its 24-byte header; Pillow never opens it."""
    data = blank_png(12000, 12000)
    assert len(data) < 40_000

    def never(*args, **kwargs):
        raise AssertionError("the image was opened")

    monkeypatch.setattr(Image, "open", never)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="12000x12000 pixels is over the limit"):
            read_recording(data, "big.png", 1, DYN)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak


def test_content_not_name_decides_the_format_and_npy_data_must_be_all_there():
    jpeg = coloured_png(true_db(4, (128, 128)), fmt="JPEG")
    assert read_file(jpeg, "named-png.png", 1, DYN).colormap == "jet"  # a JPEG named .png is a JPEG
    whole = npy_of(np.full((16, 16), -3.0, np.float32))
    assert read_recording(whole, "ok.npy", 1, DYN).shape == (1, 16, 16)
    with pytest.raises(DatasetError, match="truncated"):
        read_recording(whole[:-10], "cut.npy", 1, DYN)
    with pytest.raises(DatasetError, match=r"iq.npy: .*raw recording enrols only with its radar parameters"):
        read_recording(npy_of(np.zeros((4, 4), np.complex64)), "iq.npy", 1, DYN)
    with pytest.raises(DatasetError, match="over the limit"):
        read_recording(npy_header_only((10**6, 10**6)), "big.npy", 1, DYN)
