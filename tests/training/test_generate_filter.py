"""generate --filter: over-generation, kept/rejected files, the rejection report in meta.json, resume."""

import csv
import json

import pytest

from tests.refusals import refused
from training.cli import main

BASE = ["--per-user", "2", "--steps", "2", "--batch-size", "4", "--seed", "3", "--threads", "1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_pipeline_dir):
    """Real-looking walks of the tiny pipeline's three users (alice, bob, carol), 6 train + 2 test each."""
    from training.data.dataset import Record, write_dataset
    from training.data.simulate import SimulateConfig, dataset_meta
    from training.data.users import make_user, simulate_recording

    users = json.loads(open(f"{tiny_pipeline_dir}/user_encoder/config.json").read())["users"]
    size = json.loads(open(f"{tiny_pipeline_dir}/dopplergen.json").read())["image_size"][0]
    profiles = [make_user(40 + i, u) for i, u in enumerate(users)]
    meta = dataset_meta(SimulateConfig(users=len(users), size=size, preview_per_user=0), profiles)
    records = [Record(p.user_id, f"{j:02d}", simulate_recording(p, j, size=size).db,
                      "train" if j < 6 else "test")
               for p in profiles for j in range(8)]
    path = tmp_path_factory.mktemp("ref") / "real"
    write_dataset(path, records, meta)
    return str(path)


def _rows(out):
    with open(out / "manifest.csv") as f:
        return list(csv.DictReader(f))


def test_generate_with_filter_keeps_per_user_and_reports_the_rejection_rate(
    tiny_pipeline_dir, reference, tmp_path, capsys
):
    out = tmp_path / "syn"
    args = ["generate", "--pipeline", tiny_pipeline_dir, "--out", str(out), *BASE, "--filter",
            "confidence,diversity",
            "--filter-tau", "0", "--filter-factor", "2", "--reference", reference]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "filter: kept 6 of 12 candidates (rejection rate 50.0%" in printed
    rows = _rows(out)
    assert len(rows) == 6 and {r["user"] for r in rows} == {"alice", "bob", "carol"}
    kept = {r["path"] for r in rows}
    rejected = {str(p.relative_to(out / ".rejected")) for p in (out / ".rejected").rglob("*.npy")}
    assert len(rejected) == 6 and not kept & rejected
    assert all((out / p).is_file() for p in kept)
    meta = json.loads((out / "meta.json").read_text())
    rep = meta["generation"]["filter_report"]
    assert rep["candidates"] == 12 and rep["kept"] == 6 and rep["rejection_rate"] == pytest.approx(0.5)
    assert (rep["per_filter"]["diversity"]["rejected"] == 6
            and rep["per_filter"]["confidence"]["rejected"] == 0)
    assert meta["generation"]["filter"]["filters"] == ["confidence", "diversity"]
    # Resume: nothing is drawn again (rejected candidates stay under .rejected/), the same files are kept.
    assert main(args) == 0
    assert "generated 0 new samples" in capsys.readouterr().out
    assert {r["path"] for r in _rows(out)} == kept
    # Other filter settings refuse to mix into the folder.
    refused(capsys, "other settings",
            main([*args[:-6], "--filter", "confidence", "--filter-tau", "0", "--filter-factor", "2",
                  "--reference", reference]))


def test_generate_filter_options_are_checked(tiny_pipeline_dir, tmp_path, capsys):
    base = ["generate", "--pipeline", tiny_pipeline_dir, *BASE]
    refused(capsys, "unknown filter", main([*base, "--out", str(tmp_path / "a"), "--filter", "sharpness"]))
    refused(capsys, "needs --reference",
            main([*base, "--out", str(tmp_path / "b"), "--filter", "confidence"]))


def test_generate_physics_filter_against_the_reference(tiny_pipeline_dir, reference, tmp_path, capsys):
    """The physics filter compares with the reference's train split (the tiny pipeline's dataset meta has no
    radar axes, so the reference's are used for the candidates too)."""
    out = tmp_path / "p"
    assert main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(out), *BASE, "--filter", "physics",
                 "--reference", reference]) == 0
    rep = json.loads((out / "meta.json").read_text())["generation"]["filter_report"]
    assert rep["candidates"] == 18 and rep["kept"] + rep["shortfall"] == 6
    assert "physics" in rep["per_filter"] and "train split" in rep["physics_reference"]
    assert len(_rows(out)) == rep["kept"]
    assert "filter: kept" in capsys.readouterr().out
