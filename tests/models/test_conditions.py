"""Condition encoder (speed, aspect, activity -> tokens), its pipeline folder, sampling with it, per-user
draws."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models.condition_stats import describe_conditions, encoder_specs, offered_conditions, resolve_conditions
from models.conditions import ConditionEncoder, ConditionError, drop_conditions
from models.pipeline import DopplerPipeline, build_untrained_pipeline
from models.sampling import sample
from tests.conftest import TINY_USERS

SPECS = [{"name": "speed_mps", "type": "numeric", "range": [0.6, 2.0]},
         {"name": "aspect_deg", "type": "numeric", "range": [-70.0, 70.0]},
         {"name": "activity", "type": "categorical", "values": ["walk", "run"]}]


def _encoder(dim: int = 32) -> ConditionEncoder:
    torch.manual_seed(0)
    return ConditionEncoder(conditions=SPECS, cross_attention_dim=dim, tokens_per_condition=2).eval()


def test_tokens_shape_and_each_condition_has_its_own_absent_value():
    enc = _encoder()
    v = enc.values_tensor([{"speed_mps": 1.2, "aspect_deg": 30, "activity": "run"}, {"speed_mps": 1.2}, None])
    assert v.shape == (3, 3) and math.isnan(v[1, 1]) and v[0, 2] == 1.0 and torch.isnan(v[2]).all()
    with torch.no_grad():
        tok = enc(v)
    assert tok.shape == (3, 6, 32) and torch.isfinite(tok).all()
    # dropping aspect and activity leaves the speed tokens alone and changes the others
    assert torch.allclose(tok[0, :2], tok[1, :2]) and not torch.allclose(tok[0, 2:], tok[1, 2:])
    # two different speeds give different tokens; absent differs from any given value
    with torch.no_grad():
        other = enc(enc.values_tensor([{"speed_mps": 1.8}]))
    assert not torch.allclose(other[0, :2], tok[1, :2]) and not torch.allclose(tok[2, :2], tok[1, :2])


def test_values_are_checked_against_the_recorded_ranges():
    enc = _encoder()
    with pytest.raises(ConditionError, match=r"speed_mps must be within the trained range \[0.6, 2\]") as e:
        enc.values_tensor([{"speed_mps": 2.5}])
    assert e.value.field == "speed_mps"
    with pytest.raises(ConditionError, match="activity must be one of") as e:
        enc.values_tensor([{"activity": "crawl"}])
    assert e.value.field == "activity"
    with pytest.raises(ConditionError, match="unknown condition 'height'"):
        enc.values_tensor([{"height": 1.8}])
    with pytest.raises(ConditionError, match="must be a number"):
        enc.values_tensor([{"aspect_deg": "left"}])
    with pytest.raises(ValueError, match="range must be finite"):
        ConditionEncoder(conditions=[{"name": "x", "type": "numeric", "range": [1, 1]}])


def test_dropout_is_independent_per_condition():
    v = torch.zeros(4000, 3)
    dropped = torch.isnan(drop_conditions(v, 0.3, torch.Generator().manual_seed(0)))
    rate = dropped.float().mean(0)
    assert torch.allclose(rate, torch.full((3,), 0.3), atol=0.03)
    both = (dropped[:, 0] & dropped[:, 1]).float().mean()
    assert abs(float(both) - 0.09) < 0.02  # independent: P(both) = 0.3 x 0.3
    assert torch.isnan(drop_conditions(v, [0.0, 1.0, 0.0])).float().mean(0).tolist() == [0.0, 1.0, 0.0]


def test_save_pretrained_round_trip_is_safetensors(tmp_path):
    enc = _encoder()
    enc.save_pretrained(tmp_path / "ce", safe_serialization=True)
    assert (tmp_path / "ce" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "ce" / "config.json").read_text())["conditions"] == SPECS
    back = ConditionEncoder.from_pretrained(tmp_path / "ce", use_safetensors=True).eval()
    v = enc.values_tensor([{"speed_mps": 0.9, "aspect_deg": -45}])
    with torch.no_grad():
        assert torch.equal(enc(v), back(v))


def save_conditioned_pipeline(path) -> str:
    """A random tiny pipeline conditioned on speed_mps and aspect_deg, with per-user training distributions
    (alice walks 0.8-1.0 m/s, bob 1.5-1.9, carol 1.1-1.3; aspect uniform in +-60 deg) in dopplergen.json."""
    torch.manual_seed(1)
    pipe = build_untrained_pipeline("tiny", TINY_USERS, version="test")
    rng = np.random.default_rng(0)
    users = np.repeat(TINY_USERS, 50)
    lo = np.select([users == "alice", users == "bob"], [0.8, 1.5], 1.1)
    cols = {"speed_mps": lo + rng.uniform(0, 0.2, len(users)) * np.where(users == "bob", 2, 1),
            "aspect_deg": rng.uniform(-60, 60, len(users))}
    pipe.meta["conditions"] = describe_conditions(cols, users, ["speed_mps", "aspect_deg"])
    specs = encoder_specs(pipe.meta["conditions"], ["speed_mps", "aspect_deg"])
    pipe.condition_encoder = ConditionEncoder(conditions=specs, cross_attention_dim=32)
    pipe.to("cpu").save(path)
    return str(path)


@pytest.fixture(scope="module")
def cond_pipeline_dir(tmp_path_factory) -> str:
    return save_conditioned_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-cond")


def test_pipeline_without_conditions_loads_and_samples_as_before(tiny_pipeline_dir):
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    assert pipe.condition_encoder is None and pipe.conditions == []
    idx = torch.tensor([0, 2])
    assert torch.equal(pipe.encode_context(idx), pipe.user_encoder(idx))  # no extra tokens
    a = sample(pipe, [0, 1], [3, 4], num_inference_steps=2)
    assert a.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="condition encoder"):
        sample(pipe, [0], [3], num_inference_steps=2, conditions=torch.zeros(1, 2))


def test_pipeline_with_conditions_round_trips_and_conditions_steer_sampling(cond_pipeline_dir):
    pipe = DopplerPipeline.load(cond_pipeline_dir)
    assert pipe.conditions == ["speed_mps", "aspect_deg"]
    ctx = pipe.encode_context(torch.tensor([0]))
    assert ctx.shape == (1, 4 + 2, 32)
    enc = pipe.condition_encoder
    slow, fast = enc.values_tensor([{"speed_mps": 0.85,
                                     "aspect_deg": 0}]), enc.values_tensor([{"speed_mps": 1.85}])
    kw = dict(num_inference_steps=2, guidance_scale=2.0)
    a = sample(pipe, [1], [7], conditions=slow, **kw)
    assert torch.equal(a, sample(pipe, [1], [7], conditions=slow, **kw))  # deterministic
    assert not torch.equal(a, sample(pipe, [1], [7], conditions=fast, **kw))  # the condition reaches the UNet
    # padded to a fixed batch, a row keeps its own conditions (padding rows: null user, conditions absent)
    both = sample(pipe, [1, 1], [7, 7], conditions=torch.cat([slow, fast]), pad_to=4, **kw)
    alone = sample(pipe, [1], [7], conditions=fast, pad_to=4, **kw)
    assert torch.equal(both[1], alone[0])
    assert sample(pipe, [0], [1], **kw).shape == (1, 1, 32, 32)  # no conditions given: all absent


def _columns():
    rng = np.random.default_rng(0)
    users = np.repeat(["alice", "bob"], 200)
    speed = np.where(users == "alice", rng.uniform(0.8, 1.0, 400), rng.uniform(1.5, 1.9, 400))
    aspect = rng.uniform(-60, 60, 400)
    activity = np.where(rng.uniform(size=400) < 0.25, "run", "walk")
    return {"speed_mps": speed, "aspect_deg": aspect, "activity": activity}, users


def test_describe_records_types_ranges_and_per_user_distributions():
    cols, users = _columns()
    desc = describe_conditions(cols, users, ["speed_mps", "aspect_deg", "activity"])
    sp = desc["speed_mps"]
    assert sp["type"] == "numeric" and sp["encoding"] == "fourier-mlp"
    assert sp["range"][0] <= cols["speed_mps"].min() and sp["range"][1] >= cols["speed_mps"].max()
    assert sp["per_user"]["alice"]["quantiles"][-1] <= 1.0 and sp["per_user"]["bob"]["quantiles"][0] >= 1.5
    assert desc["activity"]["values"] == ["run", "walk"] and desc["activity"]["encoding"] == "embedding"
    assert sum(desc["activity"]["per_user"]["bob"]["counts"].values()) == 200
    specs = encoder_specs(desc, ["speed_mps", "activity"])
    assert [s["name"] for s in specs] == ["speed_mps", "activity"]
    offered = offered_conditions(ConditionEncoder(conditions=specs), desc)
    assert list(offered) == ["speed_mps", "activity"] and offered["speed_mps"]["range"] == sp["range"]
    assert offered["speed_mps"]["unit"] == "m/s" and "unit" not in offered["activity"]
    assert offered["activity"]["values"] == ["run", "walk"] and "per_user" not in offered["speed_mps"]
    assert offered_conditions(None, desc) == {}
    json.dumps(desc)  # goes into dopplergen.json as is
    with pytest.raises(KeyError, match="no column 'range_m'"):
        describe_conditions(cols, users, ["range_m"])


def test_omitted_conditions_are_drawn_from_the_users_distribution_deterministically():
    cols, users = _columns()
    names = ["speed_mps", "aspect_deg", "activity"]
    desc = describe_conditions(cols, users, names)
    draws = [resolve_conditions(desc, names, "alice", None, seed) for seed in range(300)]
    speeds = np.array([d["speed_mps"] for d in draws])
    assert 0.8 <= speeds.min() and speeds.max() <= 1.0 and speeds.std() > 0.04  # alice's spread, not bob's
    bob = np.array([resolve_conditions(desc, names, "bob", None, s)["speed_mps"] for s in range(50)])
    assert bob.min() >= 1.5
    assert 0.15 < np.mean([d["activity"] == "run" for d in draws]) < 0.35
    assert resolve_conditions(desc, names, "alice", None, 5) == draws[5]  # same seed, same draw
    # a given condition is kept and does not change the draw of the others
    fixed = resolve_conditions(desc, names, "alice", {"speed_mps": 0.9}, 5)
    assert fixed["speed_mps"] == 0.9 and fixed["aspect_deg"] == draws[5]["aspect_deg"]
    # a user without stats (enrolled later) draws from the whole training set
    carol = np.array([resolve_conditions(desc, names, "carol", None, s)["speed_mps"] for s in range(200)])
    assert carol.min() < 1.0 and carol.max() > 1.5


def test_compositional_guidance_is_the_three_branch_formula_and_plain_when_scales_agree(cond_pipeline_dir):
    """eps = e(null, absent) + g (e(user, absent) - e(null, absent)) + g_c (e(user, cond) - e(user, absent)),
    checked against the network's own three outputs; g_c = g (or None, or no condition) is plain guidance."""
    from models.sampling import start_row
    from models.solvers import guided

    pipe = DopplerPipeline.load(cond_pipeline_dir)
    enc = pipe.condition_encoder
    vals = enc.values_tensor([{"speed_mps": 1.1, "aspect_deg": 30}])
    kw = dict(num_inference_steps=2, guidance_scale=3.0)
    plain = sample(pipe, [1], [7], conditions=vals, **kw)
    assert torch.equal(plain, sample(pipe, [1], [7], conditions=vals, condition_guidance_scale=3.0, **kw))
    composed = sample(pipe, [1], [7], conditions=vals, condition_guidance_scale=1.0, **kw)
    assert not torch.equal(plain, composed)
    # no condition present: nothing to compose, so the row is plain whatever g_c says
    none = enc.absent_values(1)
    assert torch.equal(sample(pipe, [1], [7], conditions=none, **kw),
                       sample(pipe, [1], [7], conditions=none, condition_guidance_scale=1.0, **kw))
    row = start_row(pipe, 1, 7, 2, 3.0, conditions=vals[0], condition_guidance=1.0)
    assert row.mid is not None and row.condition_guidance == 1.0
    assert start_row(pipe, 1, 7, 2, 3.0, conditions=vals[0], condition_guidance=3.0).mid is None
    # the formula, on three arbitrary branch outputs of a batch of two (one composed row, one plain row)
    plain_row = start_row(pipe, 0, 8, 2, 2.0, conditions=vals[0])
    out = torch.randn(6, 4, 2, 2)  # [uncond x 2, cond x 2, mid x 2]
    got = guided(out, [row, plain_row], 2, 3)
    assert torch.allclose(got[0], out[0] + 3.0 * (out[4] - out[0]) + 1.0 * (out[2] - out[4]))
    assert torch.allclose(got[1], out[1] + 2.0 * (out[3] - out[1]))
    assert composed.shape == (1, 1, 32, 32) and torch.isfinite(composed).all()
    # batch invariance holds for composed rows as well (fixed shape: three branches for every row)
    both = sample(pipe, [1, 0], [7, 8], conditions=torch.cat([vals, vals]), condition_guidance_scale=1.0,
                  pad_to=4, **kw)
    alone = sample(pipe, [1], [7], conditions=vals, condition_guidance_scale=1.0, pad_to=4, **kw)
    assert torch.equal(both[0], alone[0])
