"""Conditions over HTTP (issue 15): /info lists them, /generate takes speed_mps / aspect_deg / activity, draws
the omitted ones from the user's training distribution (echoed, deterministic), and answers 422 naming a bad
field."""

from __future__ import annotations

import numpy as np
import pytest

from models.pipeline import DopplerPipeline
from models.sampling import sample
from tests.models.test_conditions import save_conditioned_pipeline
from tests.service.conftest import serve
from tests.service.test_determinism import npy

pytestmark = pytest.mark.anyio
COMMON = {"num_inference_steps": 2, "format": "npy"}


@pytest.fixture(scope="module")
def cond_pipe(tmp_path_factory) -> DopplerPipeline:
    return DopplerPipeline.load(save_conditioned_pipeline(tmp_path_factory.mktemp("pipelines") / "tiny-cond"))


async def test_info_lists_conditions_and_identity_only_pipelines_list_none(make_app, cond_pipe):
    async with serve(make_app(pipeline=cond_pipe)) as client:
        cond = (await client.get("/info")).json()["conditions"]
    assert list(cond) == ["speed_mps", "aspect_deg"]
    assert cond["speed_mps"]["type"] == "numeric" and cond["speed_mps"]["range"][0] <= 0.8
    assert cond["aspect_deg"]["range"][0] < -59 and "per_user" not in cond["aspect_deg"]
    async with serve(make_app()) as client:
        info = (await client.get("/info")).json()
        assert info["conditions"] == {}
        r = await client.post("/generate", json={"user_id": "alice", "seed": 1, **COMMON})  # unchanged
        assert r.status_code == 200 and r.json()["items"][0]["conditions"] is None
        r = await client.post("/generate", json={"user_id": "alice", "seed": 1, "speed_mps": 1.2, **COMMON})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "speed_mps"
    assert "trained without conditions" in r.json()["message"]


async def test_given_conditions_steer_and_omitted_ones_are_drawn_per_user(make_app, cond_pipe):
    async with serve(make_app(pipeline=cond_pipe)) as client:
        given = (await client.post("/generate", json={
            "user_id": "alice", "seed": 5, "num_samples": 2, "speed_mps": 0.9, "aspect_deg": 40, **COMMON
        })).json()
        faster = (await client.post("/generate", json={
            "user_id": "alice", "seed": 5, "speed_mps": 1.8, "aspect_deg": 40, **COMMON
        })).json()
        drawn = (await client.post("/generate", json={
            "user_id": "bob", "seed": 10, "num_samples": 4, "aspect_deg": 0, **COMMON
        })).json()
        again = (await client.post("/generate", json={
            "user_id": "bob", "seed": 12, "aspect_deg": 0, **COMMON
        })).json()
    assert [it["conditions"] for it in given["items"]] == [{"speed_mps": 0.9, "aspect_deg": 40.0}] * 2
    assert not np.array_equal(npy(given["items"][0]), npy(faster["items"][0]))  # speed reaches the model
    speeds = [it["conditions"]["speed_mps"] for it in drawn["items"]]
    assert all(1.5 <= v <= 1.9 for v in speeds) and len(set(speeds)) == 4  # bob's own speeds, one per seed
    assert {it["conditions"]["aspect_deg"] for it in drawn["items"]} == {0.0}
    # seed 12 alone resolves and samples exactly as it did as the third of four
    assert again["items"][0]["conditions"] == drawn["items"][2]["conditions"]
    assert np.allclose(npy(again["items"][0]), npy(drawn["items"][2]), atol=0.05)
    # ... and as the one sampler does in-process with those values
    enc = cond_pipe.condition_encoder
    direct = sample(cond_pipe, [1], [12], num_inference_steps=2, conditions=enc.values_tensor(
        [again["items"][0]["conditions"]]))
    assert np.allclose(npy(again["items"][0]), direct[0].numpy(), atol=0.05)


@pytest.mark.parametrize("body, field, text", [
    ({"speed_mps": 3.0}, "speed_mps", "speed_mps must be within the trained range ["),
    ({"aspect_deg": -85}, "aspect_deg", "aspect_deg must be within the trained range ["),
    ({"activity": "run"}, "activity", "was not trained on activity"),
    ({"speed_mps": "fast"}, "speed_mps", ""),
])
async def test_bad_conditions_are_422_naming_the_field(make_app, cond_pipe, body, field, text):
    async with serve(make_app(pipeline=cond_pipe)) as client:
        r = await client.post("/generate", json={"user_id": "alice", "seed": 1, **COMMON, **body})
    assert r.status_code == 422
    assert r.json()["details"][0]["field"] == field and text in r.json()["message"]


async def test_condition_guidance_is_a_request_field_with_a_pipeline_default(make_app, cond_pipe):
    """condition_guidance_scale composes the guidance (models.sampling); fixed padding runs three branches for
    every row, so a composed sample is the same alone or beside a plain one."""
    import copy

    enc = cond_pipe.condition_encoder
    body = {"user_id": "alice", "seed": 3, "speed_mps": 1.0, "aspect_deg": 20, "guidance_scale": 3.0,
            **COMMON}
    want = sample(cond_pipe, [0], [3], num_inference_steps=2, guidance_scale=3.0,
                  condition_guidance_scale=1.0,
                  conditions=enc.values_tensor([{"speed_mps": 1.0, "aspect_deg": 20}]))[0].numpy()
    plain = sample(cond_pipe, [0], [3], num_inference_steps=2, guidance_scale=3.0,
                   conditions=enc.values_tensor([{"speed_mps": 1.0, "aspect_deg": 20}]))[0].numpy()
    async with serve(make_app(pipeline=cond_pipe, batch_padding="fixed", max_batch_size=4)) as client:
        info = (await client.get("/info")).json()
        r = (await client.post("/generate", json={**body, "condition_guidance_scale": 1.0})).json()
        p = (await client.post("/generate", json=body)).json()
    assert info["defaults"]["condition_guidance_scale"] is None  # this pipeline records none: plain guidance
    assert info["defaults"]["identity_guidance_scale"] is None
    assert r["condition_guidance_scale"] == 1.0 and p["condition_guidance_scale"] is None
    assert (
        np.allclose(npy(r["items"][0]), want, atol=0.05) and np.allclose(npy(p["items"][0]), plain, atol=0.05)
    )
    assert not np.allclose(want, plain, atol=0.05)
    # the pipeline's defaults (dopplergen.json) apply to a request that names a condition: composed with
    # identity_guidance_scale and condition_guidance_scale; a request that names none is plain guidance_scale
    pipe = copy.copy(cond_pipe)
    pipe.meta = {
        **cond_pipe.meta, "guidance_scale": 2.0, "identity_guidance_scale": 3.0,
        "condition_guidance_scale": 1.0,
    }
    named = {k: v for k, v in body.items() if k != "guidance_scale"}
    drawn = {k: v for k, v in named.items() if k not in ("speed_mps", "aspect_deg")}
    async with serve(make_app(pipeline=pipe)) as client:
        info = (await client.get("/info")).json()
        d = (await client.post("/generate", json=named)).json()
        e = (await client.post("/generate", json=drawn)).json()
    assert (info["defaults"]["guidance_scale"], info["defaults"]["identity_guidance_scale"],
            info["defaults"]["condition_guidance_scale"]) == (2.0, 3.0, 1.0)
    assert (d["guidance_scale"], d["condition_guidance_scale"]) == (3.0, 1.0)
    assert np.allclose(npy(d["items"][0]), want, atol=0.05)
    assert (e["guidance_scale"], e["condition_guidance_scale"]) == (2.0, None)
    drew = enc.values_tensor([e["items"][0]["conditions"]])
    plain_drawn = sample(cond_pipe, [0], [3], num_inference_steps=2, guidance_scale=2.0, conditions=drew)
    assert np.allclose(npy(e["items"][0]), plain_drawn[0].numpy(), atol=0.05)
    async with serve(make_app()) as client:  # identity-only pipelines take no condition guidance
        r = await client.post(
            "/generate", json={"user_id": "alice", "condition_guidance_scale": 1.0, **COMMON}
        )
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "condition_guidance_scale"
