"""`dopplergen import` on figures as published: small matplotlib JPEGs of simulated walks with a strong
zero-Doppler line, axes, labels and a colour bar."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from models.colormap import rank_candidates
from service.axes import pipeline_axes
from training.data.convert import crop_and_invert, explain, read_source, resize_db
from training.data.dataset import DatasetError, load_dataset
from training.data.figure_axes import parse_doppler_range, parse_time_range
from training.data.importer import ImportConfig, import_dataset
from training.data.radar import simulate_walk

matplotlib.use("Agg")
DYN = 60.0
SPAN_MPS = (-4.0, 4.0)  # the figures' velocity axis
SECONDS = 2.0
CARRIER = 24e9


def walk_db(i: int, people: int = 3) -> np.ndarray:
    """Person i % people's walk i: 64x64 dB, the clutter (zero-Doppler) line 10 dB above the body."""
    return simulate_walk(height_m=1.6 + 0.1 * (i % people), speed_mps=1.0 + 0.05 * i, seed=i, size=64,
                         duration_s=SECONDS, clutter_db=10.0, velocity_span_mps=SPAN_MPS).db


def save_figure(db: np.ndarray, path: Path, quality: int, dpi: int, cmap: str = "jet") -> None:
    """A small figure as papers publish them: imshow with axes, ticks, labels and a colour bar, as JPEG."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2.5), dpi=dpi)
    im = ax.imshow(db, cmap=cmap, vmin=-DYN, vmax=0, aspect="auto", extent=[0, SECONDS, *SPAN_MPS])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("velocity (m/s)")
    fig.colorbar(im, label="dB")
    fig.savefig(path, pil_kwargs={"quality": quality})
    plt.close(fig)


def make_figures(root: Path, n: int = 30, people: int = 3) -> dict[str, np.ndarray]:
    """root/p<person>/walk_s<session>.jpg (JPEG quality 75..90, 60..80 dpi); returns the true dB per file."""
    truth = {}
    for i in range(n):
        rel = f"p{i % people}/walk_s{i // people:02d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        truth[rel] = walk_db(i, people)
        save_figure(truth[rel], root / rel, quality=(75, 80, 85, 90)[i % 4], dpi=(60, 70, 80)[i % 3])
    return truth


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("figures") / "src"
    return root, make_figures(root)


@pytest.fixture(scope="module")
def imported(figures, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "ds"
    import_dataset(figures[0], out, ImportConfig(size=32, crop="auto", doppler_range="-4m/s:4m/s",
                                                time_range="0:2", carrier_hz=CARRIER), progress=False)
    return out


def test_thirty_jpeg_figures_with_a_strong_zero_doppler_line_import_with_crop_auto(figures, imported):
    ds = load_dataset(imported)
    assert ds.x.shape == (30, 1, 32, 32)
    maes = [np.abs(x[0] - resize_db(figures[1][src], 32, DYN)).mean()
            for x, src in zip(ds.x, ds.extra["source"], strict=True)]
    # the plot area was kept, not half of it cut at the zero-Doppler line (measured: mean 2.7 dB, worst 4.0;
    # what remains is matplotlib blending colours when it resamples 64 rows into ~110 pixels, and JPEG)
    assert np.mean(maes) < 3.5 and max(maes) < 5.0, maes
    zero_row = ds.x[:, 0].mean(axis=(0, 2)).argmax()  # the clutter line: 0 m/s, the middle of -4..4 m/s
    assert abs(zero_row + 0.5 - 16) <= 1.0, zero_row


def test_the_zero_doppler_line_is_bridged_and_the_colour_bar_is_not(figures):
    rgb = read_source(figures[0] / "p0/walk_s00.jpg", "p0/walk_s00.jpg")
    (y0, y1, x0, x1), inv, problem = crop_and_invert(rgb, "jet", "auto")
    assert problem is None
    h, w = rgb.shape[:2]
    assert y1 - y0 > 0.6 * h and x1 < 0.8 * w  # the whole plot's height, and left of the colour bar
    row = (inv.value.mean(axis=1)).argmax()  # the clutter line is inside the kept box, near its middle
    assert abs(row - (y1 - y0) / 2) < 0.1 * (y1 - y0)


# ---- advice: the right map, and a crop in the file's own pixels --------------------------------------------
def test_colour_map_advice_ranks_the_right_map_first_on_the_plot_area(figures, tmp_path):
    with pytest.raises(DatasetError, match=r"not fit the viridis colour map.*Best-fitting colour maps: jet "):
        import_dataset(figures[0], tmp_path / "out", ImportConfig(size=32, colormap="viridis", crop="auto"),
                       progress=False)
    for rel in list(figures[1])[:6]:  # white margins made gist_ncar look best; the noise floor fitted hsv
        rgb = read_source(figures[0] / rel, rel)
        assert rank_candidates(rgb)[0][0] == "jet", rel
        for wrong in ("gist_ncar", "hsv", "gray", "turbo"):
            assert crop_and_invert(rgb, wrong, "auto")[2] is not None, (rel, wrong)


def test_crop_advice_is_in_the_files_pixels_and_pastes(figures):
    rel = "p1/walk_s03.jpg"
    rgb = read_source(figures[0] / rel, rel)
    for given in (None, "10:-10,12:-12", "5:160,3:200"):
        box, inv, problem = crop_and_invert(rgb, "jet", given)
        advice = explain(rel, rgb, problem, "jet", given, box)
        crop = re.search(r"--crop (\d+:\d+,\d+:\d+)", advice)[1]
        assert crop != given
        assert crop_and_invert(rgb, "jet", crop)[2] is None, (given, advice)  # pasting it works
    assert crop_and_invert(rgb, "jet", "auto")[0] == crop_and_invert(rgb, "jet", crop)[0]


def test_a_figure_whose_map_ends_in_the_margin_colour_asks_for_a_crop_by_hand(tmp_path):
    save_figure(walk_db(0), tmp_path / "grey.jpg", quality=90, dpi=70, cmap="gray")
    rgb = read_source(tmp_path / "grey.jpg", "grey.jpg")
    box, _, problem = crop_and_invert(rgb, "gray", "auto")  # white margins lie on the gray map (0 dB)
    assert problem is not None and problem.kind == "margin"
    assert explain("grey.jpg", rgb, problem, "gray", "auto", box).endswith(
        "Crop to the spectrogram by hand: --crop Y0:Y1,X0:X1 (rows, then columns, in pixels)")


# ---- --skip-bad --------------------------------------------------------------------------------------------
def test_skip_bad_imports_the_rest_and_names_each_skipped_file(figures, tmp_path, capsys):
    from training.cli import main

    src = tmp_path / "src"
    shutil.copytree(figures[0], src)
    (src / "p0/walk_s10.jpg").write_bytes(b"not a jpeg")
    save_figure(walk_db(3), src / "p1/walk_s10.jpg", quality=90, dpi=70, cmap="viridis")
    with pytest.raises(DatasetError, match=r"(?s)2 of 32 file\(s\) could not be imported"):
        import_dataset(src, tmp_path / "all", ImportConfig(size=32, crop="auto"), progress=False)
    assert not (tmp_path / "all").exists()
    assert main(["import", str(src), "--out", str(tmp_path / "out"), "--size", "32", "--crop", "auto",
                 "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert "import: skipped p0/walk_s10.jpg: cannot read" in err
    assert "import: skipped p1/walk_s10.jpg: does not fit the jet colour map" in err
    assert "import: 30 files of 3 people" in out and "(2 skipped" in out
    skipped = json.loads((tmp_path / "out" / "meta.json").read_text())["import"]["skipped"]
    assert [s["source"] for s in skipped] == ["p0/walk_s10.jpg", "p1/walk_s10.jpg"]
    assert "Best-fitting colour maps: viridis" in skipped[1]["reason"]
    assert len(load_dataset(tmp_path / "out")) == 30
    (src / "p0/walk_s00.jpg").write_bytes(b"")  # every file bad: nothing to import is still an error
    with pytest.raises(DatasetError, match="could not be imported"):
        import_dataset(src, tmp_path / "none", ImportConfig(size=32, colormap="magma", crop="auto",
                                                            skip_bad=True), progress=False)


# ---- physical axes -----------------------------------------------------------------------------------------
def test_doppler_and_time_ranges_give_physical_axes(imported):
    meta = json.loads((imported / "meta.json").read_text())
    hz_per_mps = 2 * CARRIER / 299_792_458.0
    assert meta["carrier_hz"] == CARRIER and meta["doppler_axis"].startswith("descending (row 0")
    assert meta["doppler_hz_per_bin"] == pytest.approx(8 * hz_per_mps / 32)
    assert meta["doppler_hz_row0"] == pytest.approx(4 * hz_per_mps - meta["doppler_hz_per_bin"] / 2)
    assert meta["seconds_per_frame"] == pytest.approx(SECONDS / 32)
    # the clutter line sits at 0 Hz on these axes, within a bin
    ds = load_dataset(imported)
    row = ds.x[:, 0].mean(axis=(0, 2)).argmax()
    assert abs(meta["doppler_hz_row0"] - row * meta["doppler_hz_per_bin"]) <= meta["doppler_hz_per_bin"]
    axes = pipeline_axes({"dataset": {"meta": meta}}, (32, 32))  # what /info and the page show
    assert axes["doppler_hz_row0"] == pytest.approx(meta["doppler_hz_row0"])
    assert axes["seconds_per_frame"] == pytest.approx(SECONDS / 32) and axes["carrier_hz"] == CARRIER


@pytest.mark.parametrize("text, carrier, hz", [
    ("-400:400", None, (-400.0, 400.0)), ("-400Hz:400Hz", None, (-400.0, 400.0)), ("-1kHz:2kHz", None,
                                                                                  (-1e3, 2e3)),
    ("-4:4m/s", 24e9, (-4 * 160.1, 4 * 160.1)), ("4m/s:-4m/s", 24e9, (4 * 160.1, -4 * 160.1)),
])
def test_doppler_range_syntax(text, carrier, hz):
    assert parse_doppler_range(text, carrier) == pytest.approx(hz, rel=1e-3)


@pytest.mark.parametrize("text, carrier, message", [
    ("-4m/s:4m/s", None, "pass --carrier-hz"), ("-4m/s:400Hz", None, "different units"),
    ("400:400", None, "equal"), ("-4..4", None, "expected LO:HI"), ("a:b", None, "expected LO:HI"),
])
def test_doppler_range_errors_say_what_is_wrong(text, carrier, message):
    with pytest.raises(ValueError, match=message):
        parse_doppler_range(text, carrier)


def test_time_range_and_the_cli_flags(figures, tmp_path, capsys):
    from training.cli import main

    assert parse_time_range("0s:2.5s") == (0.0, 2.5)
    for bad, message in (("2:1", "before"), ("0:2Hz", "expected seconds"), ("0", "expected LO:HI")):
        with pytest.raises(ValueError, match=message):
            parse_time_range(bad)
    assert main(["import", str(figures[0]), "--out", str(tmp_path / "a"), "--size", "16", "--crop", "auto",
                 "--doppler-range=-4m/s:4m/s"]) == 2
    assert "pass --carrier-hz" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["import", str(figures[0]), "--out", str(tmp_path / "b"), "--size", "16", "--crop", "auto",
                 "--doppler-range=-640.5:640.5", "--time-range", "0:2"]) == 0
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["doppler_hz_per_bin"] == pytest.approx(1281 / 16) and "carrier_hz" not in meta
