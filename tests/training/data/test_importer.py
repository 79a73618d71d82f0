"""`dopplergen import`: colour-mapped images of known dB back to dB, split by session, failures that explain
themselves."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from models import sessions
from training.data.dataset import DatasetError, load_dataset
from training.data.importer import ImportConfig, import_dataset

matplotlib.use("Agg")
DYN = 60.0


def known_db(size: int, person: int, session: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """A spectrogram-like dB field (torso line, limb sinusoid, noise floor) that differs by person and
    session."""
    t = (np.arange(size)[None, :] + 0.5) / size
    f = (np.arange(size)[:, None] + 0.5) / size
    torso = 0.3 + 0.12 * person + 0.03 * session
    limb = torso + 0.2 * np.sin(2 * np.pi * (2 + person) * t + 0.7 * window + session)
    power = np.exp(-((f - torso) ** 2) / (2 * 0.03**2)) + 0.3 * np.exp(-((f - limb) ** 2) / (2 * 0.04**2))
    db = 10 * np.log10(power + 1e-5 * (1 + rng.random((size, size))))
    return np.clip(db - db.max(), -DYN, 0.0)


def colour(db: np.ndarray, name: str = "jet") -> np.ndarray:
    """dB -> (H, W, 3) uint8 through a matplotlib map, -DYN..0 dB spanning the whole map (as published)."""
    return np.rint(matplotlib.colormaps[name]((db + DYN) / DYN)[..., :3] * 255).astype(np.uint8)


def build(root: Path, name: str = "jet", people: int = 3, n_sessions: int = 4, windows: int = 3,
          size: int = 128,
          ext: str = "png") -> dict[str, np.ndarray]:
    """An ImageFolder of colour-mapped windows, root/person<p>/walk_s<s>_w<w>.<ext>; returns the true dB per
    file."""
    rng = np.random.default_rng(0)
    truth = {}
    for p in range(people):
        (root / f"person{p}").mkdir(parents=True, exist_ok=True)
        for s in range(n_sessions):
            for w in range(windows):
                db = known_db(size, p, s, w, rng)
                rel = f"person{p}/walk_s{s:02d}_w{w:02d}.{ext}"
                Image.fromarray(colour(db, name)).save(root / rel,
                                                       **({"quality": 90} if ext == "jpg" else {}))
                truth[rel] = db
    return truth


def recovery(out: Path, truth: dict[str, np.ndarray]) -> tuple[float, float]:
    """(mean absolute dB error, smallest per-image correlation) of the imported folder against the truth,
    block-averaged."""
    ds = load_dataset(out)
    maes, corrs = [], []
    for x, src in zip(ds.x, ds.extra["source"], strict=True):
        ref = truth[src]
        k = ref.shape[0] // x.shape[-1]
        ref = ref.reshape(x.shape[-2], k, x.shape[-1], k).mean(axis=(1, 3))
        maes.append(np.abs(x[0] - ref).mean())
        corrs.append(np.corrcoef(x[0].ravel(), ref.ravel())[0, 1])
    return float(np.mean(maes)), float(np.min(corrs))


@pytest.fixture(scope="module")
def jet_src(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("published") / "jet"
    return root, build(root)


@pytest.fixture(scope="module")
def imported(jet_src, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "ds"
    import_dataset(jet_src[0], out, ImportConfig(size=64), progress=False)
    return out


def nothing_left(out: Path) -> bool:
    """No DST and no temporary folder beside it."""
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ---- colour -> dB ------------------------------------------------------------------------------------------
def test_jet_128px_imported_at_64px_recovers_db(jet_src, imported):
    mae, corr = recovery(imported, jet_src[1])
    assert mae < 3.0 and corr >= 0.95, (mae, corr)
    ds = load_dataset(imported)
    assert ds.x.shape == (36, 1, 64, 64) and ds.x.max() <= 0.0 and ds.x.min() >= -DYN
    meta = json.loads((imported / "meta.json").read_text())
    assert meta["image_size"] == [64,
                                  64] and meta["source"] == "imported" and meta["import"]["colormap"] == "jet"
    assert 0 <= meta["import"]["mean_inversion_error_255"] < 2  # a lossless PNG lies on the map's curve


def test_the_image_folder_reader_inverts_jet_where_luminance_misses(jet_src):
    """The dataset reader's ImageFolder path reads the jet PNGs through the same colour-map logic as import
    (models/recording.py detects jet); luminance, what it did before (issue 31), misses badly."""
    ds = load_dataset(jet_src[0], size=64)
    truth = {rel: jet_src[1][rel].reshape(64, 2, 64, 2).mean(axis=(1, 3)) for rel in ds.paths}
    mae = np.mean([np.abs(x[0] - truth[rel]).mean() for x, rel in zip(ds.x, ds.paths, strict=True)])
    assert mae < 3.0
    lum = {rel: np.asarray(Image.open(jet_src[0] / rel).convert("L").resize((64, 64)), np.float32) / 255
           for rel in ds.paths}
    assert np.mean([np.abs(lum[rel] * DYN - DYN - truth[rel]).mean() for rel in ds.paths]) > 3.0


def test_jpeg_and_other_maps_import(tmp_path):
    truth = build(tmp_path / "jpg", people=2, n_sessions=3, windows=2, ext="jpg")
    import_dataset(tmp_path / "jpg", tmp_path / "a", ImportConfig(size=64), progress=False)
    mae, corr = recovery(tmp_path / "a", truth)
    assert mae < 3.0 and corr >= 0.95, (mae, corr)
    truth = build(tmp_path / "viridis", name="viridis", people=2, n_sessions=3, windows=2)
    import_dataset(tmp_path / "viridis", tmp_path / "b", ImportConfig(size=32, colormap="viridis"),
                   progress=False)
    mae, corr = recovery(tmp_path / "b", truth)
    assert mae < 3.0 and corr >= 0.95, (mae, corr)


def test_npy_values_are_referenced_to_their_peak(tmp_path):
    rng = np.random.default_rng(1)
    for p in range(2):
        (tmp_path / "src" / f"p{p}").mkdir(parents=True)
        for s in range(3):
            np.save(tmp_path / "src" / f"p{p}" / f"rec{s}.npy", 10 ** ((known_db(48, p, s, 0, rng) + 7) / 10))
    import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32, npy_unit="power"),
                   progress=False)
    ds = load_dataset(tmp_path / "out")
    assert ds.x.shape == (6, 1, 32, 32) and -1.0 < ds.x.max() <= 0.0


# ---- sessions and splits -----------------------------------------------------------------------------------
def test_no_session_spans_two_splits_and_every_person_has_each_split(imported):
    with open(imported / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"path", "user", "split", "group", "source"} <= set(rows[0])
    split_of: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        split_of.setdefault((r["user"], r["group"]), set()).add(r["split"])
    assert len(split_of) == 12 and all(len(v) == 1 for v in split_of.values()), split_of
    for user in {r["user"] for r in rows}:
        assert {r["split"] for r in rows if r["user"] == user} == {"train", "val", "test"}


def test_split_is_deterministic(jet_src, imported, tmp_path):
    import_dataset(jet_src[0], tmp_path / "again", ImportConfig(size=64), progress=False)
    assert (tmp_path / "again" / "manifest.csv").read_bytes() == (imported / "manifest.csv").read_bytes()


@pytest.mark.parametrize("rel, session", [
    ("walk_s03_w12.png", "walk_s03"), ("rec7-003.jpg", "rec7"), ("bob_win2.png", "bob"), ("0001.png", "0001"),
    ("rec12.png", "rec12"), ("session4/017.png", "session4"), ("a b window 3.npy", "a b"),
])
def test_default_session_rule(rel, session):
    assert sessions.default_session(rel) == session


def test_group_regex_and_split_sizes():
    assert sessions.session_of("x/walk-A_cut9.png", sessions.compile_group(r"walk-(\w)_")) == "A"
    with pytest.raises(ValueError, match="capturing group"):
        sessions.compile_group(r"walk")
    with pytest.raises(ValueError, match="does not match"):
        sessions.session_of("other.png", sessions.compile_group(r"walk-(\w)_"))
    split = sessions.split_sessions({f"s{i}": 5 for i in range(20)}, 0.15, 0.15, seed=3)
    counts = {k: sum(v == k for v in split.values()) for k in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 3, "test": 3}


# ---- failures that explain themselves, and leave nothing behind --------------------------------------------
def test_wrong_colormap_names_the_best_candidates(tmp_path):
    build(tmp_path / "src", name="viridis", people=2, n_sessions=3, windows=1, size=48)
    with pytest.raises(DatasetError,
                       match=r"does not fit the jet colour map.*Best-fitting colour maps: viridis"):
        import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32), progress=False)
    assert nothing_left(tmp_path / "out")


def test_axes_and_colour_bar_suggest_a_crop_and_auto_crop_imports(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    truth = {}
    for p in range(2):
        (tmp_path / "src" / f"p{p}").mkdir(parents=True)
        for s in range(3):
            truth[f"p{p}/rec{s}.png"] = known_db(64, p, s, 0, rng)
            fig, ax = plt.subplots(figsize=(4, 3.2), dpi=80)  # the plot area is about 250 x 200 px
            fig.colorbar(ax.imshow(truth[f"p{p}/rec{s}.png"], cmap="jet", vmin=-DYN, vmax=0, aspect="auto"))
            ax.set_xlabel("time (s)")
            fig.savefig(tmp_path / "src" / f"p{p}" / f"rec{s}.png")
            plt.close(fig)
    with pytest.raises(DatasetError,
                       match=r"p0/rec0.png: looks like it carries axes.*--crop \d+:\d+,\d+:\d+"):
        import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32), progress=False)
    assert nothing_left(tmp_path / "out")
    import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32, crop="auto"), progress=False)
    assert load_dataset(tmp_path / "out").x.shape == (6, 1, 32, 32)
    mae, corr = recovery(tmp_path / "out", truth)  # the plot area, not the axes, was kept
    assert mae < 3.0 and corr >= 0.95, (mae, corr)


def test_colour_bar_glued_to_the_image_is_found(tmp_path):
    rng = np.random.default_rng(0)
    bar = np.repeat(np.linspace(0, -DYN, 96)[:, None], 6, axis=1)
    for p in range(2):
        (tmp_path / "src" / f"p{p}").mkdir(parents=True)
        for s in range(3):
            img = np.concatenate([known_db(96, p, s, 0, rng), bar], axis=1)
            Image.fromarray(colour(img)).save(tmp_path / "src" / f"p{p}" / f"rec{s}.png")
    with pytest.raises(DatasetError, match=r"colour bar \(columns 96\.\.101.*--crop 0:96,0:96"):
        import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32), progress=False)
    assert nothing_left(tmp_path / "out")


def test_unreadable_file_is_named_and_nothing_is_written(tmp_path):
    build(tmp_path / "src", people=2, n_sessions=3, windows=2, size=48)
    (tmp_path / "src" / "person1" / "walk_s01_w01.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"^person1/walk_s01_w01.png: cannot read.*nothing was written"):
        import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32), progress=False)
    assert nothing_left(tmp_path / "out")


def test_too_few_recordings_says_what_was_found(tmp_path):
    build(tmp_path / "src", people=2, n_sessions=2, windows=3, size=48)
    with pytest.raises(DatasetError,
                       match=r"person0: too few recordings: 2 session\(s\).*'walk_s00' \(3 file"):
        import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32), progress=False)
    assert nothing_left(tmp_path / "out")
    # Two sessions do make train and test when no val split is asked for.
    import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32, val_fraction=0), progress=False)
    assert set(load_dataset(tmp_path / "out").splits) == {"train", "test"}


def test_existing_destination_is_refused(imported, jet_src):
    before = sorted(p.name for p in imported.iterdir())
    with pytest.raises(DatasetError, match="already exists"):
        import_dataset(jet_src[0], imported, ImportConfig(size=64), progress=False)
    assert sorted(p.name for p in imported.iterdir()) == before


def test_the_reader_keeps_sessions_whole_in_an_image_folder_too(jet_src, tmp_path):
    ds = load_dataset(jet_src[0])  # no import: the reader's own ImageFolder split
    pairs = {(u, g, s) for u, g, s in zip(ds.labels, ds.extra["group"], ds.splits, strict=True)}
    assert len(pairs) == 12 and len({(u, g) for u, g, _ in pairs}) == 12  # 12 sessions, each in one split
    for j in range(4):  # plain numbered files: every file its own recording, split per file as before
        (tmp_path / "u" / f"{j}.npy").parent.mkdir(exist_ok=True)
        np.save(tmp_path / "u" / f"{j}.npy", np.full((8, 8), -1.0, np.float32))
    assert "group" not in load_dataset(tmp_path).extra


def test_cli_prints_one_summary_line_and_fails_with_exit_code_2(jet_src, tmp_path, capsys):
    from training.cli import main

    assert main(["import", str(jet_src[0]), "--out", str(tmp_path / "a"), "--size", "32", "--val-fraction",
                 "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert (out[-1].startswith("import: 36 files of 3 people in 12 sessions")
            and "mean inversion error" in out[-1])
    assert main(["import", str(jet_src[0]), "--out", str(tmp_path / "b"), "--size", "32", "--colormap",
                 "nope"]) == 2
    assert "unknown colour map 'nope'" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_sixteen_bit_grey_png_through_the_gray_map(tmp_path):
    rng = np.random.default_rng(2)
    truth = {}
    for p in range(2):
        (tmp_path / "src" / f"p{p}").mkdir(parents=True)
        for s in range(3):
            truth[f"p{p}/r{s}.png"] = known_db(64, p, s, 0, rng)
            grey = np.rint((truth[f"p{p}/r{s}.png"] + DYN) / DYN * 65535).astype(np.uint16)
            Image.fromarray(grey).save(tmp_path / "src" / f"p{p}" / f"r{s}.png")
    import_dataset(tmp_path / "src", tmp_path / "out", ImportConfig(size=32, colormap="gray"), progress=False)
    mae, corr = recovery(tmp_path / "out", truth)
    assert mae < 1.0 and corr >= 0.99, (mae, corr)


def test_reversed_map_is_flagged(tmp_path, capsys):
    from training.cli import main

    build(tmp_path / "src", name="jet_r", people=2, n_sessions=3, windows=1, size=32)
    assert main(["import", str(tmp_path / "src"), "--out", str(tmp_path / "a"), "--size", "32"]) == 0
    assert "re-import with --colormap jet_r" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "src"), "--out", str(tmp_path / "b"), "--size", "32", "--colormap",
                 "jet_r"]) == 0
    assert "warning" not in capsys.readouterr().err
