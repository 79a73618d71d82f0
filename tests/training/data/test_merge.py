"""Generated data merged with real data: loads with the reader, provenance per row, generated rows never held
out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.data.test_importer import build, recovery
from training.cli import main
from training.data.dataset import DatasetError, load_dataset
from training.data.importer import ImportConfig, import_dataset
from training.data.merge import merge_folders, merge_sets, pipeline_fingerprint_of

GEN = ["--per-user", "2", "--steps", "2", "--batch-size", "2", "--seed", "5", "--threads", "1"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """Imported jet images of the tiny pipeline's people (alice, bob, carol), 32 px."""
    root = tmp_path_factory.mktemp("merge")
    build(root / "src", people=3, n_sessions=3, windows=2, size=64)
    for i, name in enumerate(("alice", "bob", "carol")):
        (root / "src" / f"person{i}").rename(root / "src" / name)
    import_dataset(root / "src", root / "real", ImportConfig(size=32), progress=False)
    return root / "real"


@pytest.fixture(scope="module")
def generated(tiny_pipeline_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "syn"
    assert main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(out), "--split", "synthetic",
                 *GEN]) == 0
    return out


def test_generate_synthetic_split_loads_with_the_reader(generated):
    ds = load_dataset(generated)
    assert ds.x.shape == (6, 1, 32, 32) and set(ds.splits) == {"synthetic"}
    assert len(pipeline_fingerprint_of(ds, generated)) == 16


def test_merge_keeps_real_splits_and_records_provenance(real, generated, tmp_path, capsys):
    assert main(["merge", str(real), str(generated), "--out", str(tmp_path / "m")]) == 0
    assert "merge: 18 real rows (train/val/test 6/6/6) + 6 synthetic rows (train)" in capsys.readouterr().out
    merged, before, gen = rows(tmp_path / "m"), rows(real), rows(generated)
    fp = json.loads((generated / "meta.json").read_text())["generation"]["pipeline_fingerprint"]
    real_rows = [r for r in merged if r["origin"] == "real"]
    syn_rows = [r for r in merged if r["origin"] == "synthetic"]
    assert ([(r["user"], r["split"], r["source"]) for r in real_rows]
            == [(r["user"], r["split"], r["source"]) for r in before])
    assert ({r["split"] for r in syn_rows} == {"train"}
            and {r["pipeline_fingerprint"] for r in syn_rows} == {fp})
    assert sorted(r["seed"] for r in syn_rows) == sorted(r["seed"] for r in gen)  # exact, not float-rounded
    assert all(r["seed"] == "" and r["pipeline_fingerprint"] == "" for r in real_rows)
    ds = load_dataset(tmp_path / "m")
    assert ds.x.shape == (24, 1, 32, 32) and ds.users == ["alice", "bob", "carol"]
    test = ds.filter(split="test")
    assert set(test.extra["origin"]) == {"real"}  # nothing generated is ever tested on
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["source"] == "merged" and meta["merge"]["synthetic"][0]["pipeline_fingerprint"] == fp


def test_merge_sets_in_memory_relabels_by_the_real_user_order(real, generated):
    r, s = load_dataset(real), load_dataset(generated, users=["carol"])
    m = merge_sets(r, s, pipeline_fingerprint="abc")
    assert len(m) == len(r) + 2 and m.users == r.users
    assert (m.labels[-2:] == r.users.index("carol")).all() and set(m.splits[-2:]) == {"train"}
    assert (list(m.extra["origin"][-2:]) == ["synthetic"] * 2
            and set(m.extra["pipeline_fingerprint"][-2:]) == {"abc"})
    np.testing.assert_array_equal(m.x[-2:], s.x)


def test_merge_refuses_unknown_users_and_non_generated_folders(real, generated, tmp_path):
    with pytest.raises(DatasetError, match="not a `dopplergen generate` folder"):
        merge_folders(real, [real], tmp_path / "a")
    assert not (tmp_path / "a").exists()
    # people person0/1, not the pipeline's
    build(tmp_path / "src", people=2, n_sessions=3, windows=1, size=32)
    import_dataset(tmp_path / "src", tmp_path / "other", ImportConfig(size=32), progress=False)
    with pytest.raises(DatasetError,
                       match=r"generated users \['alice', 'bob', 'carol'\] are not in the real data"):
        merge_folders(tmp_path / "other", [generated], tmp_path / "b")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


@pytest.mark.slow
def test_imported_folder_trains_both_stages_generates_and_merges(tmp_path, capsys):
    """The whole 'your data' path on the tiny preset: import -> train-vae -> train-unet -> generate ->
    merge."""
    truth = build(tmp_path / "published", people=3, n_sessions=3, windows=3, size=128)
    data, run = str(tmp_path / "data"), tmp_path / "runs"
    assert main(["import", str(tmp_path / "published"), "--out", data, "--size", "32", "--colormap",
                 "jet"]) == 0
    assert "mean inversion error" in capsys.readouterr().out
    mae, corr = recovery(Path(data), truth)
    assert mae < 3.0 and corr >= 0.95, (mae, corr)
    common = ["--preset", "tiny", "--data", data, "--max-steps", "2", "--batch-size", "4", "--log-every", "1",
              "--image-every", "0"]
    assert main(["train-vae", *common, "--out", str(run / "vae")]) == 0
    assert main(["train-unet", *common, "--vae", str(run / "vae" / "vae"), "--run-dir", str(run / "unet"),
                 "--out", str(run / "pipe"), "--preview-per-user", "1", "--num-inference-steps", "2"]) == 0
    assert main(["generate", "--pipeline", str(run / "pipe"), "--out", str(run / "gen"), *GEN]) == 0
    gen = load_dataset(run / "gen")
    assert gen.users == ["person0", "person1", "person2"] and gen.x.shape == (6, 1, 32, 32)
    assert main(["merge", data, str(run / "gen"), "--out", str(run / "merged")]) == 0
    merged = load_dataset(run / "merged")
    assert len(merged) == 27 + 6 and set(merged.filter(split="test").extra["origin"]) == {"real"}
