"""Stage-1 texture levers: PatchGAN hinge loss + adaptive weight, the spectrogram perceptual loss, --init-from."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_resume import _assert_same_run
from tests.training.test_train import _vae_args, _weights, dataset, vae_run  # noqa: F401 - fixtures
from training import vae_gan
from training.cli import main as cli
from training.eval.classifier import UserCNN
from training.perceptual import SpectrogramPerceptual

LEVERS = ("--perceptual-weight", "0.1", "--perceptual-steps", "3", "--disc-weight", "0.5", "--disc-start", "1",
          "--lr-warmup-steps", "1")


def test_hinge_losses_at_chance_and_when_separated():
    zero = torch.zeros(4, 1, 3, 3)
    assert vae_gan.hinge_d_loss(zero, zero).item() == pytest.approx(1.0)
    assert vae_gan.hinge_d_loss(zero + 2, zero - 3).item() == 0.0
    assert vae_gan.hinge_d_loss(zero - 1, zero + 1).item() == pytest.approx(2.0)
    assert vae_gan.generator_loss(zero + 0.5).item() == pytest.approx(-0.5)


def test_adaptive_weight_is_the_gradient_norm_ratio_clamped():
    w = torch.randn(3, 3, requires_grad=True)
    rec, g = 4.0 * w.sum(), w.sum()
    assert vae_gan.adaptive_weight(rec, g, w, 0.5).item() == pytest.approx(0.5 * 4.0, rel=1e-4)
    assert vae_gan.adaptive_weight(rec, 0.0 * w.sum(), w, 1.0).item() == pytest.approx(1e4)  # ||grad g|| = 0
    assert not vae_gan.adaptive_weight(rec, g, w, 1.0).requires_grad


def test_discriminator_patch_map_and_frozen_forward_leaves_its_weights_alone():
    disc = vae_gan.NLayerDiscriminator(1, width=8, n_layers=3)
    assert disc(torch.randn(2, 1, 64, 64)).shape == (2, 1, 6, 6)
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    vae_gan.generator_loss(vae_gan.frozen_forward(disc, x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in disc.parameters())


def test_perceptual_loss_zero_for_equal_inputs_grows_with_noise_and_passes_gradients():
    torch.manual_seed(0)
    loss = SpectrogramPerceptual(UserCNN(3))
    loss.train()
    assert not loss.trunk.training  # BatchNorm keeps the classifier's statistics
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-8)
    small, large = loss(x + 0.01 * torch.randn_like(x), x), loss(x + 0.5 * torch.randn_like(x), x)
    assert 0 < small.item() < large.item() <= 4.0
    y = x.clone().requires_grad_(True)
    loss(y + 0.1, x).backward()
    assert y.grad.abs().sum() > 0 and all(p.grad is None for p in loss.parameters())


def test_levers_train_log_and_resume_exactly(dataset, tmp_path):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(_vae_args(dataset, a, 4, *LEVERS)) == 0
    rows = [json.loads(line) for line in (a / "log.jsonl").read_text().splitlines()]
    assert "g_loss" not in rows[0] and {"g_loss", "d_weight", "d_loss", "perceptual"} <= rows[-1].keys()
    ckpt = a / "checkpoints" / "checkpoint-4"
    assert load_file(ckpt / "model_1.safetensors")  # the discriminator is part of the resume state
    assert json.loads((ckpt / "step.json").read_text())["optimizers"][1]["param_groups"][0]["betas"] == [0.5, 0.9]
    assert cli(_vae_args(dataset, b, 2, *LEVERS)) == 0
    assert cli(_vae_args(dataset, b, 4, *LEVERS, "--resume", "latest")) == 0
    _assert_same_run("vae", a, b)
    x, y = load_file(a / "checkpoints/checkpoint-4/model_1.safetensors"), load_file(b / "checkpoints/checkpoint-4/model_1.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_init_from_starts_at_the_saved_weights_and_refuses_other_architectures(dataset, vae_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "ft"
    assert cli(_vae_args(dataset, out, 1, "--init-from", str(vae_run / "vae"), "--lr", "1e-9")) == 0
    src, got = _weights(vae_run / "vae"), _weights(out / "vae")
    assert all(torch.allclose(src[k], got[k], atol=1e-6) for k in src)
    assert cli(_vae_args(dataset, tmp_path / "bad", 1, "--init-from", "checkpoints/demo/vae")) == 2
    assert "differs from this run's preset" in capsys.readouterr().err
