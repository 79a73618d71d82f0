"""`dopplergen import` on figures as published: small matplotlib JPEGs of simulated walks with a strong
zero-Doppler line, axes, labels and a colour bar."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from models.colormap import rank_candidates
from training.data.convert import crop_and_invert, explain, read_source, resize_db
from training.data.dataset import DatasetError, load_dataset
from training.data.importer import ImportConfig, import_dataset
from training.data.radar import simulate_walk

matplotlib.use("Agg")
DYN = 60.0
SPAN_MPS = (-4.0, 4.0)  # the figures' velocity axis
SECONDS = 2.0


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
    import_dataset(figures[0], out, ImportConfig(size=32, crop="auto"), progress=False)
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
