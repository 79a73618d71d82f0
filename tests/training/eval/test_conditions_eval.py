"""The condition-following section of `dopplergen evaluate`: settings per user, read-out, affinity bins,
figure."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models.condition_stats import describe_conditions, encoder_specs
from models.conditions import ConditionEncoder
from models.pipeline import build_untrained_pipeline
from training.cli import main
from training.data.dataset import load_dataset
from training.eval.conditions import condition_following, markdown, settings_for, torso_mps


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "cover"
    assert main(["simulate", "--users", "2", "--per-user", "8", "--size", "32", "--preview-per-user", "0",
                 "--cover-conditions", "--out", str(out)]) == 0
    return load_dataset(out)


def _conditioned_pipe(sim):
    """An untrained tiny pipeline with a speed + aspect condition encoder and the data's per-user
    statistics."""
    torch.manual_seed(0)
    names = ["speed_mps", "aspect_deg"]
    pipe = build_untrained_pipeline("tiny", sim.users, version="test")
    pipe.meta["conditions"] = describe_conditions(sim.extra, [sim.users[i] for i in sim.labels], names)
    pipe.condition_encoder = ConditionEncoder(conditions=encoder_specs(pipe.meta["conditions"], names),
                                              cross_attention_dim=32).eval()
    return pipe, names


def test_torso_readout_follows_v_cos_aspect_on_simulated_recordings(sim):
    got = torso_mps(sim.x, sim.meta)
    want = sim.extra["speed_mps"] * np.cos(np.deg2rad(sim.extra["aspect_deg"]))
    assert np.median(np.abs(got / want - 1)) < 0.12  # 32 px: one Doppler bin is ~0.3 m/s


def test_section_rows_bins_figure_and_markdown(sim, tmp_path):
    pipe, names = _conditioned_pipe(sim)
    settings = settings_for(pipe.meta["conditions"], "user01")
    assert len(settings) == 9 and {a for _, _, a in settings} == {0.0, 30.0, 60.0}
    q = pipe.meta["conditions"]["speed_mps"]["per_user"]["user01"]["quantiles"]
    assert {v for _, v, _ in settings} == {q[2], q[10], q[18]}  # user01's own slow / mid / fast
    ctx = SimpleNamespace(pipe=pipe, data=SimpleNamespace(users=sim.users, meta=sim.meta), st=SimpleNamespace(
        batch_size=6), steps=2, guidance=2.0, sampler="dpmsolver++", seed=0, out=tmp_path, log=print)
    (tmp_path / "figures").mkdir()
    clf = SimpleNamespace(predict=lambda x: np.zeros(len(x), np.int64))  # always names user00
    sec = condition_following(ctx, SimpleNamespace(clf=clf, trtr=0.8), per_setting=1)
    assert [r["n"] for r in sec["rows"]] == [2] * 9 and all(r["affinity"] == 0.5 for r in sec["rows"])
    assert [b["aspect_deg"] for b in sec["aspect_bins"]] == [[0.0, 20.0], [20.0, 40.0], [40.0, 90.0]]
    assert sec["aspect_bins"][0]["ratio_to_trtr"] == pytest.approx(0.5 / 0.8)
    assert (tmp_path / "figures" / "condition_sweep.png").stat().st_size > 1000
    text = "\n".join(markdown(sec))
    assert "## Condition following" in text and "condition_sweep.png" in text and text.count("\n| ") >= 9 + 3
    pipe.condition_encoder = None  # identity-only pipelines: the section says why it is skipped
    assert ("skipped" in condition_following(ctx, None, 1)
            and "Skipped" in markdown(condition_following(ctx, None, 1))[2])


def test_evaluator_samples_draw_conditions_as_the_service_does(sim):
    """evaluate's pool of a conditioned pipeline: each sample's conditions drawn from its person's training
    distribution with its seed (what POST /generate does for a request without them), not the absent
    tokens."""
    from models.condition_stats import resolve_conditions
    from models.sampling import sample
    from training.eval.context import Context

    pipe, names = _conditioned_pipe(sim)
    ctx = SimpleNamespace(data=SimpleNamespace(users=sim.users), st=SimpleNamespace(batch_size=4), steps=2,
                          guidance=2.0, sampler="dpmsolver++")
    y, seeds = np.array([0, 1, 1]), [3, 4, 5]
    got = Context.sample(ctx, pipe, y, seeds).x
    drawn = pipe.condition_encoder.values_tensor([
        resolve_conditions(pipe.meta["conditions"], names, sim.users[c], None, s)
        for c, s in zip(y, seeds, strict=True)
    ])
    want = sample(pipe, [0, 1, 1], seeds, num_inference_steps=2, guidance_scale=2.0, sampler="dpmsolver++",
                  pad_to=4, conditions=drawn).numpy()
    absent = sample(pipe, [0, 1, 1], seeds, num_inference_steps=2, guidance_scale=2.0, sampler="dpmsolver++",
                    pad_to=4).numpy()
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - absent).max() > 1e-3
