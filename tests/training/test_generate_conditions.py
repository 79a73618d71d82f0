"""dopplergen generate with conditions: value or sweep flags, omitted ones drawn per user, recorded in the
manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.models.test_conditions import save_conditioned_pipeline
from tests.refusals import refused
from tests.training.test_generate import BASE, _manifest
from training.cli import main
from training.condition_grid import parse_values
from training.data.generated import Item, derive_seed, write_manifest


@pytest.fixture(scope="module")
def cond_pipeline(tmp_path_factory) -> str:
    return save_conditioned_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-cond")


def test_parse_values():
    assert parse_values("1.2", "speed_mps") == [1.2]
    assert parse_values("0.8:1.6:5", "speed_mps") == [0.8, 1.0, 1.2, 1.4, 1.6]
    assert parse_values("0,30,60", "aspect_deg") == [0.0, 30.0, 60.0] and parse_values(None, "x") is None
    with pytest.raises(SystemExit, match="--speed-mps: expected a value"):
        parse_values("fast", "speed_mps")


def test_sweep_writes_every_setting_with_the_same_seeds(cond_pipeline, tmp_path):
    out = tmp_path / "sweep"
    args = ["generate", "--pipeline", cond_pipeline, "--out", str(out), *BASE, "--users", "alice"]
    assert main([*args, "--speed-mps", "0.9:1.7:3", "--aspect-deg", "0,50"]) == 0
    rows = _manifest(out)
    assert len(rows) == 3 * 6 and list(rows[0])[-2:] == ["speed_mps", "aspect_deg"]
    settings = {(float(r["speed_mps"]), float(r["aspect_deg"])) for r in rows}
    assert settings == {(v, a) for v in (0.9, 1.3, 1.7) for a in (0.0, 50.0)}
    key = lambda r: (float(r["speed_mps"]), float(r["aspect_deg"]))  # noqa: E731
    seeds = {s: [int(r["seed"]) for r in rows if key(r) == s] for s in settings}
    assert all(v == [derive_seed(7, "alice", i) for i in range(3)] for v in seeds.values())
    first = [np.load(out / r["path"]) for r in rows[:2]]
    assert not np.array_equal(*first)  # the condition changes the sample at the same seed
    assert json.loads((out / "meta.json").read_text())["generation"]["conditions"][0] == {"speed_mps": 0.9,
                                                                                          "aspect_deg": 0.0}
    gen = json.loads((out / "meta.json").read_text())["generation"]
    assert gen["condition_guidance"] is None  # this pipeline records no compositional default: plain guidance
    # --condition-guidance composes identity and conditions (models.sampling)
    composed = tmp_path / "composed"
    assert main(["generate", "--pipeline", cond_pipeline, "--out", str(composed), *BASE, "--users", "alice",
                 "--speed-mps", "0.9", "--aspect-deg", "0", "--guidance", "3", "--condition-guidance",
                 "1"]) == 0
    gen = json.loads((composed / "meta.json").read_text())["generation"]
    assert (gen["guidance"], gen["condition_guidance"]) == (3.0, 1.0)


def test_omitted_conditions_are_drawn_from_each_users_distribution(cond_pipeline, tmp_path):
    out = tmp_path / "drawn"
    assert main(["generate", "--pipeline", cond_pipeline, "--out", str(out), *BASE, "--aspect-deg",
                 "20"]) == 0
    rows = _manifest(out)
    speed = {u: [float(r["speed_mps"]) for r in rows if r["user"] == u] for u in ("alice", "bob")}
    assert all(0.8 <= v <= 1.0 for v in speed["alice"]) and all(1.5 <= v <= 1.9 for v in speed["bob"])
    assert {r["aspect_deg"] for r in rows} == {"20.0"}
    again = tmp_path / "again"  # deterministic: the same draws and bytes
    assert main(["generate", "--pipeline", cond_pipeline, "--out", str(again), *BASE, "--aspect-deg",
                 "20"]) == 0
    assert _manifest(again) == rows


def test_out_of_range_and_unconditioned_pipelines_are_clear_errors(
    cond_pipeline, tiny_pipeline_dir, tmp_path, capsys
):
    refused(capsys, r"--speed-mps: speed_mps must be within the trained range",
            main(["generate", "--pipeline", cond_pipeline, "--out", str(tmp_path / "a"), *BASE, "--speed-mps",
                  "3"]))
    refused(capsys, "trained without conditions",
            main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(tmp_path / "b"), *BASE,
                  "--aspect-deg", "0"]))
    out = tmp_path / "plain"  # no flags, no conditions: the manifest is the old one
    assert main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(out), *BASE]) == 0
    assert list(_manifest(out)[0]) == ["path", "user", "split", "seed", "steps", "guidance", "scheduler"]


def test_an_absent_condition_is_written_nan_so_the_column_loads_as_numbers(tmp_path):
    """A fall drawn or asked for has no walking speed (None): the export writes `nan`, as the simulator does,
    not an empty cell that would turn the whole speed_mps column into text when the export is loaded."""
    items = [Item("alice", i, 10 + i, f"alice/alice_gen{i:05d}.npy") for i in range(2)]
    settings = {"steps": 2, "guidance": 2.0, "scheduler": "dpmsolver++"}
    write_manifest(tmp_path, items, "train", settings,
                   [{"speed_mps": 1.2, "activity": "walk"}, {"speed_mps": None, "activity": "fall"}])
    rows = _manifest(tmp_path)
    assert [(r["speed_mps"], r["activity"]) for r in rows] == [("1.2", "walk"), ("nan", "fall")]
    assert np.isnan(float(rows[1]["speed_mps"]))
