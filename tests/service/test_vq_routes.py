"""The service serves the experimental VQ pipelines unchanged: /info names the route, samples stay
deterministic."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from models.pipeline import DopplerPipeline, build_untrained_pipeline
from tests.service.conftest import serve
from tests.service.test_determinism import RecordingStepper, npy

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=["vq-diffusion", "vq-latent"])
def vq_pipe(request, tmp_path_factory) -> DopplerPipeline:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("svc") / request.param
    build_untrained_pipeline(
        "tiny", ["alice", "bob", "carol"], route=request.param, num_inference_steps=4,
        scheduler="vq-diffusion" if request.param == "vq-diffusion" else "dpmsolver++",
    ).save(path)
    return DopplerPipeline.load(path)


async def test_info_names_the_route_and_generation_is_batch_invariant(make_app, vq_pipe):
    rec = RecordingStepper()
    discrete = vq_pipe.route == "vq-diffusion"
    async with serve(make_app(rec, pipeline=vq_pipe, max_batch_size=4, max_wait_ms=500,
                              batch_padding="fixed")) as client:
        info = (await client.get("/info")).json()
        rec.sizes.clear()
        common = {"guidance_scale": 2.0, "format": "npy"}
        alone = (await client.post("/generate", json={"user_id": "bob", "seed": 42, **common})).json()
        together = await asyncio.gather(*[client.post("/generate", json={"user_id": u, "seed": s, **common})
                                          for u, s in [("alice", 1), ("bob", 42), ("carol", 3)]])
        wrong = "ddim" if discrete else "vq-diffusion"
        bad = await client.post("/generate", json={"user_id": "bob", "scheduler": wrong})
        too_many = await client.post("/generate", json={"user_id": "bob", "num_inference_steps": 21})
    assert info["model"]["route"] == vq_pipe.route and info["model"]["autoencoder"] == "VQModel"
    assert info["model"]["denoiser"] == ("Transformer2DModel" if discrete else "UNet2DConditionModel")
    assert info["schedulers"] == (["vq-diffusion"] if discrete else ["ddpm", "ddim", "dpmsolver++"])
    assert info["defaults"]["scheduler"] == ("vq-diffusion" if discrete else "dpmsolver++")
    assert alone["scheduler"] == info["defaults"]["scheduler"] and alone["model"]["route"] == vq_pipe.route
    assert max(rec.sizes) == 3 and rec.sizes[0] == 1  # alone, then the three together
    assert np.array_equal(npy(alone["items"][0]), npy(together[1].json()["items"][0]))
    assert bad.status_code == 422 and "scheduler" in bad.text
    # The discrete route cannot take more steps than it was trained with (20 for tiny); the UNet routes can.
    assert too_many.status_code == (422 if discrete else 200)
