"""The experimental VQ routes at the model level: folder round trip, code ranges, the discrete sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models import autoencoder as ae
from models.pipeline import DopplerPipeline, PipelineError, build_untrained_pipeline
from models.sampling import respaced_vq_scheduler, sample

USERS = ["u0", "u1", "u2"]


@pytest.fixture(scope="module", params=["vq-latent", "vq-diffusion"])
def vq_pipe(request, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vq") / request.param
    build_untrained_pipeline("tiny", USERS, route=request.param).save(path)
    return DopplerPipeline.load(path), path


def test_folder_round_trip_and_stock_diffusers_load(vq_pipe):
    from diffusers import Transformer2DModel, UNet2DConditionModel, VQModel

    pipe, path = vq_pipe
    meta = json.loads((path / "dopplergen.json").read_text())
    assert meta["route"] == pipe.route
    assert isinstance(VQModel.from_pretrained(path, subfolder="vae"), VQModel)
    if pipe.route == "vq-diffusion":
        assert not (path / "unet").exists()
        t = Transformer2DModel.from_pretrained(path, subfolder="transformer")
        assert t.config.num_vector_embeds == pipe.vae.config.num_vq_embeddings + 1  # + [MASK]
    else:
        assert UNet2DConditionModel.from_pretrained(path, subfolder="unet").config.in_channels == 4


def test_route_mismatch_in_metadata_is_refused(vq_pipe, tmp_path):
    import shutil

    pipe, path = vq_pipe
    copy = tmp_path / "p"
    shutil.copytree(path, copy)
    meta = json.loads((copy / "dopplergen.json").read_text())
    meta["route"] = "kl"
    (copy / "dopplergen.json").write_text(json.dumps(meta))
    with pytest.raises(PipelineError):
        DopplerPipeline.load(copy)


def test_codes_stay_in_range(vq_pipe, monkeypatch):
    pipe, _ = vq_pipe
    k = pipe.vae.config.num_vq_embeddings
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    codes = ae.encode_codes(pipe.vae, x)
    assert codes.shape == (3, 16 * 16) and codes.min() >= 0 and codes.max() < k
    if pipe.route != "vq-diffusion":
        return
    seen = []
    real = ae.decode_codes
    monkeypatch.setattr(ae, "decode_codes", lambda vq, c, grid: seen.append(c.clone()) or real(vq, c, grid))
    sample(pipe, [0, 1, 2, 0], [1, 2, 3, 4], num_inference_steps=6, guidance_scale=3.0)
    assert seen and seen[0].min() >= 0 and seen[0].max() < k  # never the [MASK] class k, never out of range


def test_sampler_is_deterministic_and_batch_invariant(vq_pipe):
    pipe, _ = vq_pipe
    kw = dict(num_inference_steps=5, guidance_scale=2.5, pad_to=8)
    alone = sample(pipe, [1], [1234], **kw)
    batched = sample(pipe, [2, 0, 1, 0, 2], [5, 6, 1234, 7, 8], **kw)
    assert torch.equal(alone[0], batched[2])
    assert torch.equal(alone, sample(pipe, [1], [1234], **kw))
    assert not torch.equal(batched[0], batched[4])
    assert torch.isfinite(batched).all() and batched.min() >= -60.0 and batched.max() <= 0.0


def test_scheduler_must_match_the_route(vq_pipe):
    pipe, _ = vq_pipe
    wrong = "dpmsolver++" if pipe.route == "vq-diffusion" else "vq-diffusion"
    with pytest.raises(ValueError, match="does not apply"):
        sample(pipe, [0], [1], num_inference_steps=2, sampler=wrong)


def _dense(sched, i: int, cumulative: bool) -> np.ndarray:
    """The (K+1) x (K+1) transition matrix q(x_i | x_prev) (or q(x_i | x_0)) from a scheduler's log tables."""
    k = sched.num_embed - 1
    tab = ("log_cumprod_" if cumulative else "log_") + "{}"
    a, b, c = (float(getattr(sched, tab.format(n))[i].exp()) for n in ("at", "bt", "ct"))
    m = np.full((k + 1, k + 1), b)
    np.fill_diagonal(m, a + b)
    m[:, k] = c  # to [MASK]
    m[k, :] = 0.0
    m[k, k] = 1.0  # [MASK] stays
    return m  # rows: from, columns: to


def test_respaced_schedule_composes_to_the_trained_one():
    from diffusers import VQDiffusionScheduler

    cfg = dict(VQDiffusionScheduler(num_vec_classes=6, num_train_timesteps=40).config)
    full, kept_full = respaced_vq_scheduler(cfg, 40)
    assert kept_full == list(range(40))
    short, kept = respaced_vq_scheduler(cfg, 7)
    assert kept[0] == 0 and kept[-1] == 39 and len(kept) == 7
    # The jumps' single-step matrices multiply up to the trained cumulative matrix at every kept step.
    prod = np.eye(6)  # 5 codes + [MASK]
    for i, t in enumerate(kept):
        prod = prod @ _dense(short, i, cumulative=False)
        np.testing.assert_allclose(prod, _dense(full, t, cumulative=True), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(prod.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="1..40"):
        respaced_vq_scheduler(cfg, 41)


def test_codebook_usage_known_answers():
    even = ae.codebook_usage(torch.arange(8).repeat(5), 8)
    assert even["perplexity"] == pytest.approx(8.0) and even["dead_fraction"] == 0.0
    collapsed = ae.codebook_usage(torch.zeros(100, dtype=torch.long), 8)
    assert (collapsed["perplexity"] == pytest.approx(1.0)
            and collapsed["dead_fraction"] == pytest.approx(7 / 8))
