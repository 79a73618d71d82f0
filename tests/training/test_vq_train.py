"""The experimental VQ routes end to end on the tiny preset: each stage trains two steps, exports, reloads,
samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_train import _kill_after, _Killed, _unet_args, _vae_args, _write_dataset
from training.cli import main as cli
from training.stages import logs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return str(_write_dataset(tmp_path_factory.mktemp("data") / "toy"))


@pytest.fixture(scope="module")
def vq_run(dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vq") / "run"
    assert cli(_vae_args(dataset, run, 2, "--autoencoder", "vq", "--dead-code-every", "1")) == 0
    return run


def _stage2_args(stage: str, dataset: str, vae: Path, out: Path, steps: int, *extra: str) -> list[str]:
    args = _unet_args(dataset, vae, out, steps, *extra)
    args[0] = f"train-{stage}"
    return args


def test_vq_stage1_reports_codebook_usage_and_measured_scaling(vq_run):
    from diffusers import VQModel

    summary = json.loads((vq_run / "vae_summary.json").read_text())
    assert summary["autoencoder"] == "vq"
    usage = summary["codebook"]
    assert (usage["num_codes"] == 128 and 1.0 <= usage["perplexity"] <= 128
            and 0.0 <= usage["dead_fraction"] < 1.0)
    rows = logs.read_jsonl(vq_run / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all("perplexity" in r and "vq" in r for r in rows)
    vq = VQModel.from_pretrained(vq_run / "vae")  # stock diffusers
    assert (vq.config.scaling_factor == pytest.approx(1.0 / summary["latent_std"])
            and vq.config.scaling_factor != 1.0)


@pytest.mark.parametrize("stage, route", [("unet", "vq-latent"), ("transformer", "vq-diffusion")])
def test_stage2_exports_a_loadable_pipeline_of_its_route(stage, route, dataset, vq_run, tmp_path):
    from models.pipeline import DopplerPipeline
    from models.sampling import sample

    out = tmp_path / route
    assert cli(_stage2_args(stage, dataset, vq_run / "vae", out, 2)) == 0
    meta = json.loads((out / "dopplergen.json").read_text())
    assert meta["route"] == route and meta["training"][stage]["max_steps"] == 2
    assert meta["scheduler"] == ("vq-diffusion" if route == "vq-diffusion" else "dpmsolver++")
    pipe = DopplerPipeline.load(out)
    assert pipe.route == route and (out / ("transformer" if route == "vq-diffusion" else "unet")).is_dir()
    x = sample(pipe, [0, 2], [1, 2], num_inference_steps=meta["num_inference_steps"],
               guidance_scale=meta["guidance_scale"])
    assert x.shape == (2, 1, 32, 32) and torch.isfinite(x).all() and float(x.max()) <= 0.0


def test_transformer_refuses_a_kl_autoencoder(dataset, tmp_path, capsys):
    kl = tmp_path / "kl"
    assert cli(_vae_args(dataset, kl, 1)) == 0
    assert cli(_stage2_args("transformer", dataset, kl / "vae", tmp_path / "p", 1)) == 2
    assert "needs a VQModel" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["vae", "transformer"])
def test_vq_kill_and_resume_equals_uninterrupted(stage, dataset, vq_run, tmp_path, monkeypatch):
    """Resume is exact on the VQ route too, dead-code resets (every step here) included."""
    def args(out: Path, *extra: str) -> list[str]:
        if stage == "vae":
            return _vae_args(dataset, out, 4, "--autoencoder", "vq", "--dead-code-every", "1", *extra)
        return _stage2_args("transformer", dataset, vq_run / "vae", out, 4, *extra)

    assert cli(args(tmp_path / "a")) == 0
    with monkeypatch.context() as m:
        _kill_after(m, 2)
        with pytest.raises(_Killed):
            cli(args(tmp_path / "b"))
    assert cli(args(tmp_path / "b", "--resume", "latest")) == 0
    run_a, run_b = ((tmp_path / "a", tmp_path / "b") if stage == "vae"
                    else (tmp_path / "a-run", tmp_path / "b-run"))
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(run_a / "checkpoints/checkpoint-4" / f),
                load_file(run_b / "checkpoints/checkpoint-4" / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
