"""Dataset folder round trip, ImageFolder reading, filters, and a clear error for each bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.data.dataset import DatasetError, Record, assign_splits, load_dataset, write_dataset


def make_folder(root, users=("bob", "alice"), per_user=5, shape=(16, 12)):
    rng = np.random.default_rng(0)
    recs = []
    for u in users:
        splits = assign_splits(per_user, seed=len(u))
        for j in range(per_user):
            db = -rng.uniform(0, 60, shape).astype(np.float32)
            db.flat[0] = 0.0
            recs.append(Record(u, f"{j:04d}", db, splits[j], {"speed_mps": 1.0 + j / 10}))
    write_dataset(root, recs, {"dyn_range_db": 60.0, "image_size": list(shape)})
    return recs


def test_round_trip_and_filters(tmp_path):
    recs = make_folder(tmp_path)
    ds = load_dataset(tmp_path)
    assert ds.users == ["alice", "bob"]  # sorted: the index order
    assert ds.x.shape == (10, 1, 16, 12) and ds.x.dtype == np.float32 and ds.labels.dtype == np.int64
    for rec, x, lab in zip(recs, ds.x, ds.labels, strict=True):
        assert np.array_equal(x[0], rec.db) and ds.users[lab] == rec.user
    assert np.allclose(ds.extra["speed_mps"][:5], [1.0, 1.1, 1.2, 1.3, 1.4])
    assert ds.fingerprint == load_dataset(tmp_path).fingerprint
    train = load_dataset(tmp_path, split="train")
    assert set(train.splits) == {"train"} and train.users == ds.users
    assert set(ds.splits[ds.labels == 0]) == {"train", "val", "test"}  # every user in every split
    only_bob = ds.filter(users=["bob"])
    assert set(only_bob.labels) == {1}
    k2 = ds.first_k_per_user(2, seed=3)
    assert k2.counts() == {"alice": 2, "bob": 2}
    assert k2.paths == ds.first_k_per_user(2, seed=3).paths
    assert load_dataset(tmp_path, channels=3).x.shape == (10, 3, 16, 12)
    np.save(tmp_path / recs[0].user / "0000.npy", recs[0].db - 1.0)  # content change -> new fingerprint
    assert load_dataset(tmp_path).fingerprint != ds.fingerprint


def test_image_folder_png_and_npy(tmp_path):
    for u in ("u1", "u2"):
        (tmp_path / u).mkdir()
        for j in range(4):
            Image.fromarray(np.full((8, 10), 255 * (j % 2), np.uint8)).save(tmp_path / u / f"{j}.png")
    ds = load_dataset(tmp_path, dyn_range_db=40.0)
    assert ds.users == ["u1", "u2"] and ds.x.shape == (8, 1, 8, 10)
    assert set(np.unique(ds.x)) == {-40.0, 0.0}  # grey 0 -> -R dB, 255 -> 0 dB
    assert list(ds.splits) == list(load_dataset(tmp_path, dyn_range_db=40.0).splits)  # deterministic split
    assert {"train", "val", "test"} <= set(ds.splits)
    assert load_dataset(tmp_path, size=(6, 5)).x.shape == (8, 1, 6, 5)
    rgb = tmp_path / "rgb"
    for u in ("a", "b"):
        (rgb / u).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8) + np.uint8([255, 0, 51])).save(rgb / u / f"{j}.png")
    x = load_dataset(rgb, channels=3).x
    assert x.shape == (6, 3, 8, 8) and np.allclose(x[0, :, 0, 0], [0.0, -60.0, -48.0])


def expect_error(root, match):
    with pytest.raises(DatasetError, match=match):
        load_dataset(root)


def test_bad_inputs_name_the_file(tmp_path):
    make_folder(tmp_path / "nan")
    bad = np.full((16, 12), -1.0, np.float32)
    bad[3, 3] = np.nan
    np.save(tmp_path / "nan" / "bob" / "0002.npy", bad)
    expect_error(tmp_path / "nan", r"bob/0002\.npy.*NaN")

    make_folder(tmp_path / "shape")
    np.save(tmp_path / "shape" / "alice" / "0001.npy", np.zeros((16, 13), np.float32))
    expect_error(tmp_path / "shape", r"alice/0001\.npy.*shape")

    make_folder(tmp_path / "missing")
    (tmp_path / "missing" / "alice" / "0003.npy").unlink()
    expect_error(tmp_path / "missing", r"alice/0003\.npy.*missing")

    make_folder(tmp_path / "linear")
    np.save(tmp_path / "linear" / "bob" / "0000.npy", np.full((16, 12), 200.0, np.float32))
    expect_error(tmp_path / "linear", r"bob/0000\.npy.*dB")

    for u in ("u1", "u2"):
        (tmp_path / "png" / u).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "png" / u / f"{j}.png")
    (tmp_path / "png" / "u2" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    expect_error(tmp_path / "png", r"u2/1\.png.*cannot read image")

    (tmp_path / "png" / "u3").mkdir()
    (tmp_path / "png" / "u2" / "1.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "png" / "u2" / "1.png")
    expect_error(tmp_path / "png", r"u3.*no \.png or \.npy")


def test_cli_end_to_end_is_byte_identical(tmp_path):
    args = ["simulate", "--users", "2", "--per-user", "6", "--size", "32", "--seed", "7",
            "--preview-per-user", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert {"meta.json", "manifest.csv", "preview.png"} <= {str(f) for f in files}
    assert len([f for f in files if f.suffix == ".npy"]) == 12
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    for key in ("carrier_hz", "prf_hz", "window", "hop", "nfft", "doppler_hz_per_bin", "seconds_per_frame",
                "dyn_range_db", "image_size", "channels", "simulate"):
        assert key in meta
    ds = load_dataset(tmp_path / "a")
    assert ds.x.shape == (12, 1, 32, 32) and ds.users == ["user00", "user01"]
    for lab in (0, 1):
        assert set(ds.splits[ds.labels == lab]) == {"train", "val", "test"}
    assert float(ds.x.max()) == 0.0 and float(ds.x.min()) >= -60.0
    assert main([*args[:-2], "--out", str(tmp_path / "c"), "--seed", "8"]) == 0
    assert ((tmp_path / "c" / "user00" / "0000.npy").read_bytes()
            != (tmp_path / "a" / "user00" / "0000.npy").read_bytes())


def test_image_folder_colour_images_go_through_the_map_meta_json_names(tmp_path):
    """The ImageFolder path reads colour PNGs like enroll and POST /users do (models/recording.py): through
    meta.json's "colormap", or the detected map; never as luminance (issue 31)."""
    from tests.uploads import coloured_png, true_db

    truth = {}
    for u in ("a", "b"):
        (tmp_path / u).mkdir()
        for j in range(3):
            truth[f"{u}/{j}.png"] = true_db(3 * len(u) + j)
            (tmp_path / u / f"{j}.png").write_bytes(coloured_png(truth[f"{u}/{j}.png"], "viridis"))
    for named in (None, "viridis"):
        (tmp_path / "meta.json").write_text(json.dumps({"colormap": named} if named else {}))
        ds = load_dataset(tmp_path)
        assert max(np.abs(x[0] - truth[p]).mean() for x, p in zip(ds.x, ds.paths, strict=True)) < 1.0
    (tmp_path / "meta.json").write_text(json.dumps({"colormap": "jet"}))
    expect_error(tmp_path, r"a/0\.png: does not fit the jet colour map.*best are viridis")
