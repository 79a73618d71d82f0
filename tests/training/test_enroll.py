"""`dopplergen enroll`: a new person appended, existing users' bytes unchanged, atomic output, provenance,
errors."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.pipeline import DopplerPipeline
from models.sampling import sample
from tests.refusals import refused
from tests.uploads import DYN, bad_uploads, coloured_png, true_db
from training.cli import main

FAST = ["--steps", "2", "--batch-size", "2", "--seed", "3"]


@pytest.fixture
def person(tmp_path) -> Path:
    d = tmp_path / "dave"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(d / f"{i}.npy", rng.uniform(-60, 0, size=(32, 32)).astype(np.float32))
    return d


def _enrol(src, person, out, *extra) -> int:
    return main(["enroll", "--pipeline", str(src), "--user", "dave", "--data", str(person), "--out", str(out),
                 "--device", "cpu", *FAST, *extra])


def test_enroll_appends_the_person_and_keeps_existing_users_bytes(
    tiny_pipeline_dir, person, tmp_path, capsys
):
    out = tmp_path / "with_dave"
    assert _enrol(tiny_pipeline_dir, person, out) == 0
    assert "enroll: dave from 3 recordings" in capsys.readouterr().out
    before, after = DopplerPipeline.load(tiny_pipeline_dir), DopplerPipeline.load(out)
    assert after.users == before.users + ["dave"]
    assert torch.equal(sample(before, [0, 1], [9, 10], num_inference_steps=2, pad_to=3),
                       sample(after, [0, 1], [9, 10], num_inference_steps=2, pad_to=3))
    for sub in ("unet", "vae"):  # frozen stages copied byte for byte
        for f in (Path(tiny_pipeline_dir) / sub).iterdir():
            assert (out / sub / f.name).read_bytes() == f.read_bytes()
    prov = json.loads((out / "dopplergen.json").read_text())["enrolled_users"]["dave"]
    assert prov["k"] == 3 and prov["steps"] == 2 and len(prov["files"][0]["sha256"]) == 64
    assert np.isfinite(prov["final_loss"]) and prov["seconds"] > 0
    assert not list(tmp_path.glob(".with_dave*"))  # no temporary folder left behind


def test_reusing_a_name_needs_replace_and_keeps_the_index(tiny_pipeline_dir, person, tmp_path, capsys):
    p = tmp_path / "p"
    shutil.copytree(tiny_pipeline_dir, p)
    assert _enrol(p, person, p) == 0  # --out = --pipeline: in place
    first = DopplerPipeline.load(p).user_encoder.embedding.weight.clone()
    refused(capsys, "--replace", _enrol(p, person, p))
    assert main(["enroll", "--pipeline", str(p), "--user", "dave", "--data", str(person), "--out", str(p),
                 "--device", "cpu", "--steps", "2", "--batch-size", "2", "--seed", "4", "--replace"]) == 0
    again = DopplerPipeline.load(p)
    assert again.users.count("dave") == 1 and again.users.index("dave") == 3
    w = again.user_encoder.embedding.weight
    assert torch.equal(w[:3], first[:3]) and torch.equal(w[4], first[4]) and not torch.equal(w[3], first[3])


def test_a_bad_file_is_named_and_nothing_is_written(tiny_pipeline_dir, person, tmp_path, capsys):
    (person / "broken.png").write_bytes(b"not a png")
    assert _enrol(tiny_pipeline_dir, person, tmp_path / "out") == 2
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_enroll_adds_the_persons_residuals_to_a_texture_bank(tiny_pipeline_dir, person, tmp_path):
    from models.texture import build_bank

    src = tmp_path / "textured"
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    x = np.random.default_rng(1).uniform(-60, 0, (4, 1, 32, 32)).astype(np.float32)
    pipe.texture = build_bank(pipe.vae, pipe.normalization, x, ["alice", "alice", "bob", "bob"])
    pipe.save(src)
    assert _enrol(src, person, tmp_path / "out") == 0
    bank = DopplerPipeline.load(tmp_path / "out").texture
    assert list(bank.config.users) == ["alice", "bob", "dave"]
    assert int((bank.owners == 2).sum()) == 3  # dave's three recordings
    assert torch.equal(bank.residuals[bank.owners == 0], pipe.texture.residuals[pipe.texture.owners == 0])


@pytest.mark.parametrize("user", ["nlx\n", "dave/x", "..", "-dave", "d" * 65, ""])
def test_a_user_id_must_match_the_rule_in_full(tiny_pipeline_dir, person, tmp_path, user, capsys):
    """The rule lives in models/paths.py (is_new_user_id), shared with POST /users; a trailing newline used to
    pass `^...$` and name a file `users/nlx\\n.json`."""
    refused(capsys, "letters, digits",
            main(["enroll", "--pipeline", tiny_pipeline_dir, f"--user={user}", "--data", str(person), "--out",
                  str(tmp_path / "out"), "--device", "cpu", *FAST]))
    assert not (tmp_path / "out").exists()


def test_out_never_replaces_recordings_or_a_non_pipeline_folder(tiny_pipeline_dir, person, tmp_path,
                                                                   capsys):
    """--out equal to or inside --data, or an existing non-pipeline folder, is refused and nothing is touched;
    another pipeline folder needs --force; --out equal to --pipeline is the in-place update."""
    (person / "notes.txt").write_text("keep me")
    (person / "raw").mkdir()
    before = sorted(p.name for p in person.iterdir())
    for out in (person, person / "sub"):
        refused(capsys, "--data", _enrol(tiny_pipeline_dir, person, out))
    assert sorted(p.name for p in person.iterdir()) == before
    stuff = tmp_path / "stuff"
    stuff.mkdir()
    (stuff / "keep.txt").write_text("x")
    refused(capsys, "not a pipeline folder", _enrol(tiny_pipeline_dir, person, stuff))
    assert (stuff / "keep.txt").read_text() == "x"
    other = tmp_path / "other"
    shutil.copytree(tiny_pipeline_dir, other)
    refused(capsys, "--force", _enrol(tiny_pipeline_dir, person, other))
    assert "dave" not in DopplerPipeline.load(other).users
    assert _enrol(tiny_pipeline_dir, person, other, "--force") == 0
    assert "dave" in DopplerPipeline.load(other).users


# ---- the one reader (issue 31): colour images inverted or refused; a bad upload is one clean line ---------
def test_jet_pngs_enrol_through_the_detected_map_within_1_db(tiny_pipeline_dir, tmp_path, capsys):
    from training.enroll import read_person

    person = tmp_path / "jet"
    person.mkdir()
    truth = [true_db(i) for i in range(3)]
    for i, db in enumerate(truth):
        (person / f"{i}.png").write_bytes(coloured_png(db, "jet"))
    for named in (None, "jet"):  # detected, or named with --colormap
        x, hashes = read_person(person, 1, DYN, (32, 32), named)
        assert x.shape == (3, 1, 32, 32)
        assert max(np.abs(x[i, 0] - truth[i]).mean() for i in range(3)) < 1.0
        assert {h["colormap"] for h in hashes} == {"jet"}
        assert {h["colormap_detected"] for h in hashes} == {named is None}
    assert _enrol(tiny_pipeline_dir, person, tmp_path / "out") == 0
    assert "enroll: 3 colour image(s) read through jet (detected)" in capsys.readouterr().out
    prov = json.loads((tmp_path / "out" / "dopplergen.json").read_text())["enrolled_users"]["dave"]
    assert prov["files"][0]["colormap"] == "jet"


def test_a_colour_image_that_fits_no_map_or_an_unknown_map_is_refused(tiny_pipeline_dir, person, tmp_path,
                                                                       capsys):
    (person / "x.png").write_bytes(coloured_png(true_db(5), "viridis"))
    assert _enrol(tiny_pipeline_dir, person, tmp_path / "out", "--colormap", "jet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dopplergen enroll: error: x.png: does not fit the jet colour map")
    assert "viridis" in err and "\n" not in err
    refused(capsys, "--colormap: unknown colour map 'parula'",
            _enrol(tiny_pipeline_dir, person, tmp_path / "out", "--colormap", "parula"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(bad_uploads()))
def test_each_bad_upload_is_one_clean_line_naming_it(tiny_pipeline_dir, person, tmp_path, capsys, name):
    data, rule = bad_uploads()[name]
    (person / name).write_bytes(data)
    assert _enrol(tiny_pipeline_dir, person, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.match(rf"dopplergen enroll: error: {re.escape(name)}: .*{rule}", err), err
    assert not (tmp_path / "out").exists()


def test_enroll_activity_makes_the_persons_samples_of_it(tiny_pipeline_dir, tmp_path, person, capsys):
    """`--activity walk` on an activity pipeline: the person is enrolled under it and their samples draw it;
    without it the command says they draw every activity; an activity the pipeline lacks is refused."""
    from models.condition_stats import describe_conditions, encoder_specs, resolve_conditions
    from models.conditions import ConditionEncoder
    from models.pipeline import build_untrained_pipeline
    from tests.conftest import TINY_USERS

    users = np.repeat(TINY_USERS, 10)
    cols = {"speed_mps": np.tile([1.2, 2.8], 5 * len(TINY_USERS)),
            "activity": np.tile(["walk", "run"], 5 * len(TINY_USERS))}
    torch.manual_seed(0)
    pipe = build_untrained_pipeline("tiny", TINY_USERS, version="test")
    pipe.meta["conditions"] = describe_conditions(cols, users, ["speed_mps", "activity"])
    pipe.condition_encoder = ConditionEncoder(conditions=encoder_specs(pipe.meta["conditions"],
                                                                       ["speed_mps", "activity"]),
                                              cross_attention_dim=32)
    src = tmp_path / "act"
    pipe.save(src)
    assert _enrol(src, person, tmp_path / "plain") == 0
    assert "activity is not known" in capsys.readouterr().out
    assert _enrol(src, person, tmp_path / "walk", "--activity", "walk") == 0
    plain, walk = (json.loads((tmp_path / p / "dopplergen.json").read_text()) for p in ("plain", "walk"))
    assert "dave" not in plain["conditions"]["activity"].get("per_user", {})
    assert walk["conditions"]["activity"]["per_user"]["dave"]["counts"] == {"walk": 3}
    assert walk["enrolled_users"]["dave"]["activity"] == "walk"
    draws = [resolve_conditions(walk["conditions"], ["activity"], "dave", None, s) for s in range(30)]
    assert {d["activity"] for d in draws} == {"walk"}
    # the walk is given to the enrolment: another row than enrolled with the activity unknown
    assert not torch.equal(DopplerPipeline.load(tmp_path / "plain").user_encoder.embedding.weight,
                           DopplerPipeline.load(tmp_path / "walk").user_encoder.embedding.weight)
    # enrolled again without it, the person no longer has a recorded activity
    assert _enrol(tmp_path / "walk", person, tmp_path / "walk", "--replace") == 0
    again = json.loads((tmp_path / "walk" / "dopplergen.json").read_text())
    assert "dave" not in again["conditions"]["activity"].get("per_user", {})
    capsys.readouterr()
    assert _enrol(src, person, tmp_path / "x", "--activity", "crawl") == 2
    assert "the pipeline's activities are run, walk" in capsys.readouterr().err
    assert _enrol(tiny_pipeline_dir, person, tmp_path / "y", "--activity", "walk") == 2
    assert "is not conditioned on activity" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
