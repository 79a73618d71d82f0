import json

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from models.pipeline import DopplerPipeline, PipelineError
from models.presets import PRESETS, get_preset
from tests.conftest import TINY_USERS


def test_presets_registry_and_base_matches_user_notes():
    assert set(PRESETS) >= {"tiny", "demo", "base"}
    base = get_preset("base")
    assert base.image_size == 256 and base.cross_attention_dim == 768 and base.latent_size == 32
    assert base.latent_channels == 4
    assert get_preset("demo").image_size == 64
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    assert get_preset("tiny", channels=3).vae_config()["in_channels"] == 3


def test_folder_layout_is_safetensors_only(tiny_pipeline_dir):
    from pathlib import Path

    root = Path(tiny_pipeline_dir)
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert "dopplergen.json" in files
    for sub in ("vae", "unet", "user_encoder"):
        assert f"{sub}/diffusion_pytorch_model.safetensors" in files
    assert "scheduler/scheduler_config.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl", ".ckpt")) for f in files)
    meta = json.loads((root / "dopplergen.json").read_text())
    assert meta["format_version"] == 1 and meta["normalization"]["dyn_range_db"] == 60.0
    assert json.loads((root / "user_encoder/config.json").read_text())["users"] == TINY_USERS


def test_stock_diffusers_loads_and_plain_loop_runs(tiny_pipeline_dir):
    """No dopplergen code: from_pretrained(subfolder=...) and a hand-written denoising loop."""
    vae = AutoencoderKL.from_pretrained(tiny_pipeline_dir, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir, subfolder="unet")
    sched = DDPMScheduler.from_pretrained(tiny_pipeline_dir, subfolder="scheduler")
    sched.set_timesteps(5)
    z = torch.randn(2, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    ctx = torch.randn(2, 4, unet.config.cross_attention_dim)
    with torch.no_grad():
        for t in sched.timesteps:
            z = sched.step(unet(z, t, encoder_hidden_states=ctx).sample, t, z).prev_sample
        x = vae.decode(z / vae.config.scaling_factor).sample
    assert x.shape == (2, 1, 32, 32) and torch.isfinite(x).all()


def test_load_round_trip_and_clear_errors(tiny_pipeline_dir, tmp_path):
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    assert pipe.users == TINY_USERS and pipe.image_size == (32, 32) and pipe.latent_shape == (4, 16, 16)
    assert pipe.user_encoder.index_of("bob") == 1 and pipe.user_encoder.null_index == 3
    with pytest.raises(KeyError):
        pipe.user_encoder.index_of("mallory")
    with pytest.raises(PipelineError, match="not a dopplergen pipeline"):
        DopplerPipeline.load(tmp_path)
    (tmp_path / "dopplergen.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(PipelineError, match="format_version"):
        DopplerPipeline.load(tmp_path)


def test_fingerprint_ignores_a_report_written_into_the_folder(tiny_pipeline_dir, tmp_path):
    """`evaluate --out P/report` must not change P's identity (compare and generate record it); weights do."""
    import shutil

    from models.pipeline import pipeline_fingerprint

    p = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, p)
    before = pipeline_fingerprint(p)
    (p / "report" / "figures").mkdir(parents=True)
    (p / "report" / "report.json").write_text(json.dumps({"runtime_s": 1.0}))
    (p / "report" / "figures" / "extra.json").write_text("{}")
    assert pipeline_fingerprint(p) == before
    cfg = p / "unet" / "config.json"
    cfg.write_text(cfg.read_text().replace("{", '{"_note": 1, ', 1))
    assert pipeline_fingerprint(p) != before
