"""New people's own condition distributions (models.condition_stats.add_people) and their recordings' known
conditions during enrolment (models.enrolment, values=): a person enrolled from slow walks is drawn slow
walks, not everyone's speeds and activities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.condition_stats import (
    add_people,
    describe_conditions,
    known_columns,
    resolve_conditions,
    value_rows,
)
from models.conditions import ConditionEncoder
from models.enrolment import EnrolConfig, Enrolment, enrol
from models.pipeline import DopplerPipeline
from tests.models.test_conditions import save_conditioned_pipeline

SPECS = [{"name": "speed_mps", "type": "numeric", "range": [0.5, 3.0]},
         {"name": "activity", "type": "categorical", "values": ["run", "walk"]}]


def _population():
    users = np.repeat(["a", "b"], 20)
    act = np.tile(["walk", "run"], 20)
    speed = np.where(act == "run", 2.8, 1.5) + np.linspace(0, 0.1, 40)
    return describe_conditions({"speed_mps": speed, "activity": act}, users, ["speed_mps", "activity"])


def test_a_new_person_draws_from_their_own_recordings_per_activity():
    desc, enc = _population(), ConditionEncoder(conditions=SPECS)
    cols = {"speed_mps": np.array([0.7, 0.72, 0.74, 9.0]), "activity": np.array(["walk"] * 3 + ["crawl"]),
            "group": np.array(["s0"] * 4)}
    out = add_people(desc, enc, cols, ["new"] * 4)
    assert desc["speed_mps"]["per_user"].keys() == {"a", "b"}  # the pipeline's block is not changed
    assert out["activity"]["per_user"]["new"]["counts"] == {"walk": 3}  # "crawl" is no trained activity
    walk = out["speed_mps"]["per_activity"]["walk"]
    assert walk["per_user"]["new"]["n"] == 3
    assert walk["all"] == desc["speed_mps"]["per_activity"]["walk"]["all"]
    for seed in range(20):
        got = resolve_conditions(out, ["speed_mps", "activity"], "new", None, seed)
        assert got["activity"] == "walk" and 0.7 <= got["speed_mps"] <= 0.74
        # someone the block does not know still draws from everyone
        other = resolve_conditions(out, ["speed_mps", "activity"], "stranger", None, seed)
        assert other["speed_mps"] > 1.4
    # 9.0 m/s is clipped into the trained range; an unknown activity is absent
    known = known_columns(enc, cols, 4)
    assert known["speed_mps"][3] == 3.0 and known["activity"][3] is None
    rows = value_rows(enc, cols, 4)
    assert rows[0] == {"speed_mps": 0.7, "activity": "walk"} and rows[3] == {"speed_mps": 3.0}
    assert value_rows(enc, {"group": cols["group"]}, 4) == [{}] * 4  # nothing known: nothing given
    with pytest.raises(ValueError, match="3 rows for 4"):
        known_columns(enc, {"speed_mps": np.ones(3)}, 4)


@pytest.fixture(scope="module")
def cond_pipe(tmp_path_factory) -> DopplerPipeline:
    return DopplerPipeline.load(save_conditioned_pipeline(tmp_path_factory.mktemp("p") / "cond"))


def test_enrolment_learns_under_the_recordings_known_conditions(cond_pipe):
    x = np.random.default_rng(0).uniform(-60, 0, size=(4, 1, 32, 32)).astype(np.float32)
    cfg = EnrolConfig(steps=3, batch_size=4, time_shifts=2, seed=1)
    enc = cond_pipe.condition_encoder
    known = enc.values_tensor([{"speed_mps": 0.9, "aspect_deg": 10.0}] * 4)
    absent_rows, _ = enrol(cond_pipe, x, [0, 0, 1, 1], 2, cfg)
    same, _ = enrol(cond_pipe, x, [0, 0, 1, 1], 2, cfg, values=enc.absent_values(4))
    known_rows, _ = enrol(cond_pipe, x, [0, 0, 1, 1], 2, cfg, values=known)
    assert torch.equal(absent_rows, same)  # all absent = no values
    assert not torch.allclose(absent_rows, known_rows)  # the known conditions reach the denoiser
    job = Enrolment(cond_pipe, x, [0, 0, 1, 1], 2, cfg, values=known)
    assert job.lat_values.shape == (2 * 4, 2)  # one row of values per latent (shift-major, as the labels)
    ctx = job._context(job.rows[:2], torch.tensor([0, 5]))
    assert ctx.shape[1] == cond_pipe.user_encoder.position.shape[0] + enc.num_tokens
    with pytest.raises(ValueError, match="values have shape"):
        Enrolment(cond_pipe, x, [0, 0, 1, 1], 2, cfg, values=known[:3])
    assert math.isfinite(job.step())
