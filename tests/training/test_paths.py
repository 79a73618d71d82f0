"""User IDs and manifest paths that would leave their folder are refused with an error that says where they
came from: the dataset reader and writer, the bulk `generate` writer and a pipeline's user list."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from models.paths import UnsafePathError, check_component, inside
from models.pipeline import DopplerPipeline, PipelineError
from training.data.dataset import DatasetError, Record, load_dataset, write_dataset
from training.data.generated import plan_items

BAD_NAMES = ["", ".", "..", "../x", "a/b", "a\\b", "/etc", "a\nb", "a\x00b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_user_id_is_one_plain_name(name):
    with pytest.raises(UnsafePathError, match="here"):
        check_component(name, "here")


@pytest.mark.parametrize("name", ["user00", "Jane Doe", "jörg-2", "a.b", "x..y"])
def test_ordinary_user_ids_pass(name):
    assert check_component(name, "here") == name


@pytest.mark.parametrize("rel", ["../outside.npy", "/etc/passwd", "a/../../b.npy", "C:\\x.npy",
                                 "..\\x.npy", ""])
def test_listed_paths_stay_inside(rel, tmp_path):
    with pytest.raises(UnsafePathError, match="leaves the folder"):
        inside(tmp_path, rel, "manifest")
    assert inside(tmp_path, "u/a..b.npy", "manifest") == tmp_path / "u" / "a..b.npy"


def _dataset(root, rows: list[tuple[str, str]]):
    root.mkdir()
    (root / "u").mkdir()
    np.save(root / "u" / "0.npy", np.full((8, 8), -10.0, np.float32))
    np.save(root.parent / "secret.npy", np.zeros((8, 8), np.float32))  # just outside the dataset
    lines = ["path,user,split"] + [f"{p},{u},train" for p, u in rows]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize(("path", "user", "message"), [
    ("../secret.npy", "u", "leaves the folder"),
    ("{abs}", "u", "leaves the folder"),
    ("u/0.npy", "../u", "is not a plain name"),
])
def test_the_reader_refuses_a_manifest_that_escapes(tmp_path, path, user, message):
    root = tmp_path / "data"
    path = path.format(abs=tmp_path / "secret.npy")
    _dataset(root, [("u/0.npy", "u"), (path, user)])
    with pytest.raises(DatasetError, match=rf"manifest\.csv: line 3: .*{message}"):
        load_dataset(root)


def test_the_reader_still_reads_a_clean_manifest(tmp_path):
    ds = load_dataset(_dataset(tmp_path / "data", [("u/0.npy", "u")]))
    assert ds.users == ["u"] and ds.x.shape == (1, 1, 8, 8)


def test_the_writers_refuse_user_ids_that_are_paths(tmp_path):
    out = tmp_path / "out"
    record = Record(user="../escaped", rec_id="0", db=np.zeros((4, 4), np.float32), split="train")
    with pytest.raises(UnsafePathError, match="escaped"):
        write_dataset(out, [record], {})
    with pytest.raises(UnsafePathError):
        write_dataset(out, [Record(user="u", rec_id="../../x", db=record.db, split="train")], {})
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "x.npy").exists()
    with pytest.raises(UnsafePathError, match="generate"):
        plan_items(["ok", "../../tmp/evil"], per_user=1, base_seed=0)


def test_a_pipeline_whose_user_list_holds_a_path_is_refused(tiny_pipeline_dir, tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    config = folder / "user_encoder" / "config.json"
    cfg = json.loads(config.read_text())
    cfg["users"][1] = "../../etc"
    config.write_text(json.dumps(cfg))
    with pytest.raises(PipelineError,
                       match=r"user_encoder: users: user ID '\.\./\.\./etc' is not a plain name"):
        DopplerPipeline.load(folder)
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    pipe.user_encoder.register_to_config(users=["alice", "b/ob", "carol"])
    with pytest.raises(PipelineError, match="b/ob"):
        pipe.save(tmp_path / "out")
