"""train-unet with conditions (issue 15): the condition encoder and per-user distributions land in the
pipeline folder; --conditions none and manifests without condition columns export exactly what they did
before."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.pipeline import DopplerPipeline
from models.sampling import sample
from tests.training.test_train import _unet_args, _vae_args, _write_dataset
from training.cli import main as cli


@pytest.fixture(scope="module")
def cond_dataset(tmp_path_factory) -> str:
    """The toy dataset plus speed_mps, aspect_deg (numeric) and activity (categorical) manifest columns."""
    path = _write_dataset(tmp_path_factory.mktemp("data") / "toy-cond")
    rows = list(csv.DictReader(open(path / "manifest.csv")))
    rng = np.random.default_rng(1)
    for i, r in enumerate(rows):
        r.update(speed_mps=f"{0.9 + 0.1 * int(r['user'][-1]) + rng.uniform(-0.1, 0.1):.3f}",
                 aspect_deg=f"{rng.uniform(-60, 60):.2f}", activity="walk" if i % 3 else "run")
    with open(path / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def cond_vae(cond_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae") / "run"
    assert cli(_vae_args(cond_dataset, run, 2)) == 0
    return run / "vae"


@pytest.fixture(scope="module")
def cond_pipeline(cond_dataset, cond_vae, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unet") / "pipe"
    assert cli(_unet_args(cond_dataset, cond_vae, out, 2)) == 0  # default --conditions auto
    return out


def test_default_conditions_are_the_manifests_and_are_exported(cond_pipeline):
    out = cond_pipeline
    assert (out / "condition_encoder" / "diffusion_pytorch_model.safetensors").is_file()
    meta = json.loads((out / "dopplergen.json").read_text())
    # order: condition_encoder/config.json
    assert set(meta["conditions"]) == {"speed_mps", "aspect_deg", "activity"}
    sp = meta["conditions"]["speed_mps"]
    assert (sp["type"] == "numeric" and sp["encoding"] == "fourier-mlp"
            and set(sp["per_user"]) == {"user0", "user1", "user2"})
    # per-user spreads
    assert sp["per_user"]["user2"]["quantiles"][0] > sp["per_user"]["user0"]["quantiles"][-1]
    assert meta["conditions"]["activity"]["values"] == ["run", "walk"]
    assert meta["training"]["unet"]["conditions"] == "auto"
    # compositional defaults
    assert (meta["identity_guidance_scale"], meta["condition_guidance_scale"]) == (3.0, 1.0)
    pipe = DopplerPipeline.load(out)
    assert pipe.conditions == ["speed_mps", "aspect_deg", "activity"]
    enc = pipe.condition_encoder
    cond = enc.values_tensor([{"speed_mps": sp["range"][0], "aspect_deg": 10, "activity": "run"}, {}])
    x = sample(pipe, [0, 1], [1, 2], num_inference_steps=2, conditions=cond)
    assert x.shape == (2, 1, 32, 32) and float(x.max()) <= 0.0


def test_identity_only_runs_export_no_condition_encoder(cond_dataset, cond_vae, tmp_path):
    out = tmp_path / "pipe"
    assert cli(_unet_args(cond_dataset, cond_vae, out, 2, "--conditions", "none")) == 0
    assert not (out / "condition_encoder").exists()
    assert not {"conditions", "condition_guidance_scale",
                "identity_guidance_scale"} & set(json.loads((out / "dopplergen.json").read_text()))
    assert DopplerPipeline.load(out).condition_encoder is None


def test_explicit_conditions_and_unknown_columns(cond_dataset, cond_vae, tmp_path, capsys):
    out = tmp_path / "pipe"
    assert cli(_unet_args(cond_dataset, cond_vae, out, 1, "--conditions", "aspect_deg",
                          "--checkpointing-steps",
                          "5")) == 0
    assert DopplerPipeline.load(out).conditions == ["aspect_deg"]
    assert cli(_unet_args(cond_dataset, cond_vae, tmp_path / "p2", 1, "--conditions",
                          "speed_mps,range_m")) == 2
    assert "['range_m'] are not columns" in capsys.readouterr().err


def test_init_from_starts_at_the_given_pipeline(cond_dataset, cond_vae, cond_pipeline, tmp_path):
    """--init-from with a zero learning rate: the exported weights are the source pipeline's (conditions
    kept)."""
    out = tmp_path / "pipe"
    assert cli(_unet_args(cond_dataset, cond_vae, out, 1, "--init-from", str(cond_pipeline), "--lr", "1e-12",
                          "--checkpointing-steps", "5")) == 0
    src, dst = DopplerPipeline.load(cond_pipeline), DopplerPipeline.load(out)
    for a, b in ((src.unet, dst.unet), (src.user_encoder, dst.user_encoder),
                 (src.condition_encoder, dst.condition_encoder)):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.allclose(p, q, atol=1e-6), name


def test_condition_route_picks_the_unets_added_embedding(cond_dataset, cond_vae, cond_pipeline, tmp_path):
    """Default route tokens+added: the stock UNet pools the context into its time embedding
    (addition_embed_type "text"); --condition-route tokens keeps the plain UNet; identity-only runs never get
    the pooled embedding."""
    assert DopplerPipeline.load(cond_pipeline).unet.config.addition_embed_type == "text"
    out = tmp_path / "tokens"
    assert cli(_unet_args(cond_dataset, cond_vae, out, 1, "--condition-route", "tokens")) == 0
    assert DopplerPipeline.load(out).unet.config.addition_embed_type is None
    out = tmp_path / "none"
    assert cli(_unet_args(cond_dataset, cond_vae, out, 1, "--conditions", "none")) == 0
    assert DopplerPipeline.load(out).unet.config.addition_embed_type is None


def test_init_from_an_identity_only_pipeline_adds_a_zero_pooled_embedding(cond_dataset, cond_vae, tmp_path):
    """Adding conditions to a trained identity-only model: every UNet weight is the source's, and the new
    pooled embedding starts at zero (its output LayerNorm scale and shift), so it adds nothing until it has
    learned."""
    src_dir, out = tmp_path / "src", tmp_path / "pipe"
    assert cli(_unet_args(cond_dataset, cond_vae, src_dir, 1, "--conditions", "none")) == 0
    assert cli(_unet_args(cond_dataset, cond_vae, out, 1, "--init-from", str(src_dir), "--lr", "1e-12")) == 0
    src, dst = DopplerPipeline.load(src_dir).unet.state_dict(), DopplerPipeline.load(out).unet.state_dict()
    new = [k for k in dst if k not in src]
    assert new and all(k.startswith("add_embedding.") for k in new)
    for k, v in src.items():
        assert torch.allclose(v, dst[k], atol=1e-6), k
    assert float(dst["add_embedding.norm2.weight"].abs().max()) < 1e-6
    assert float(dst["add_embedding.norm2.bias"].abs().max()) < 1e-6
