"""The dataset-folder contract: manifest errors name the file and line, paths stay inside, axes agree."""

import numpy as np
import pytest

from models.dataset_folder import (
    DatasetError,
    axes_from_meta,
    image_folder_rows,
    listed_file,
    manifest_path,
    read_manifest,
    read_meta,
    rescale_axes,
    resolve_inside,
    spectrogram_axes,
)
from models.paths import UnsafePathError


def test_manifest_columns_rows_and_errors(tmp_path):
    manifest_path(tmp_path).write_text("path,user\n")
    with pytest.raises(DatasetError, match=r"manifest\.csv: needs rows with path,user,split \(missing"):
        read_manifest(tmp_path)
    assert read_manifest(tmp_path, required=("path", "user"), empty_ok=True) == []
    manifest_path(tmp_path).write_text("path,user,split,speed_mps\na/0.npy,a,train,1.5\n")
    rows = read_manifest(tmp_path)
    assert rows == [{"path": "a/0.npy", "user": "a", "split": "train", "speed_mps": "1.5"}]  # as written
    assert listed_file(tmp_path, rows[0], 2) == tmp_path / "a" / "0.npy"
    with pytest.raises(DatasetError, match=r"manifest\.csv: line 3: .*leaves the folder"):
        listed_file(tmp_path, {"path": "../x.npy", "user": "a", "split": "train"}, 3)
    with pytest.raises(DatasetError, match="split 'dev' is not one of"):
        listed_file(tmp_path, {"path": "a/0.npy", "user": "a", "split": "dev"}, 2)
    (tmp_path / "meta.json").write_text("[1]")
    with pytest.raises(DatasetError, match=r"meta\.json: expected a JSON object"):
        read_meta(tmp_path)


def test_resolve_inside_refuses_a_link_out(tmp_path):
    (tmp_path / "out.npy").write_bytes(b"")
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "link.npy").symlink_to(tmp_path / "out.npy")
    with pytest.raises(UnsafePathError, match="through a link"):
        resolve_inside(tmp_path / "data", "a/link.npy", "here")
    inner = resolve_inside(tmp_path / "data", "a/0.npy", "here")
    assert inner == (tmp_path / "data" / "a" / "0.npy").resolve()


def test_image_folder_rows_are_deterministic_per_user(tmp_path):
    for user, n in (("u1", 4), ("u2", 6)):
        (tmp_path / user).mkdir()
        for j in range(n):
            (tmp_path / user / f"{j}.npy").write_bytes(b"")
    rows = image_folder_rows(tmp_path)
    assert [r["path"] for r in rows][:4] == ["u1/0.npy", "u1/1.npy", "u1/2.npy", "u1/3.npy"]
    assert {r["split"] for r in rows if r["user"] == "u2"} == {"train", "val", "test"}
    (tmp_path / "u0").mkdir()  # another user does not move the others' splits
    for j in range(3):
        (tmp_path / "u0" / f"{j}.npy").write_bytes(b"")
    assert image_folder_rows(tmp_path)[3:] == rows
    assert image_folder_rows(tmp_path, seed=1) != image_folder_rows(tmp_path)
    (tmp_path / "u0" / "0.npy").unlink()
    with pytest.raises(DatasetError, match="u0: needs at least 3 files"):
        image_folder_rows(tmp_path)


@pytest.mark.parametrize("axis", ["descending", "ascending"])
def test_the_reader_resize_and_the_served_axes_agree(axis):
    meta = {"doppler_hz_row0": -500.0, "doppler_hz_per_bin": 10.0, "doppler_axis": axis,
            "seconds_per_frame": 0.05, "image_size": [32, 48]}
    served = spectrogram_axes(meta, (16, 24))
    resized = dict(meta)
    rescale_axes(resized, (32, 48), (16, 24))
    assert served["doppler_hz_row0"] == resized["doppler_hz_row0"]
    assert served["doppler_hz_per_bin"] == resized["doppler_hz_per_bin"] == 20.0
    doppler, time_s = axes_from_meta(resized, (16, 24))
    assert doppler[0] == (-505.0 if axis == "descending" else -495.0)  # row 0's outer edge -495 / -505 stays
    assert np.allclose(np.diff(doppler), -20.0 if axis == "descending" else 20.0)
    assert time_s[0] == pytest.approx(0.05)
