"""The texture bank (models/texture.py): draws, determinism, persistence in the pipeline folder, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from models.pipeline import DopplerPipeline, PipelineError, build_untrained_pipeline
from models.sampling import sample
from models.texture import TextureBank, build_bank
from tests.training.test_train import _write_dataset
from training.cli import main as cli


def _bank(per_user: int = 2, source: str = "own") -> TextureBank:
    # person a's residuals are +1 dB everywhere, b's -1 dB: a draw shows whose it was
    r = np.concatenate([np.full((3, 1, 8, 8), 1.0), np.full((3, 1, 8, 8), -1.0)]).astype(np.float32)
    return TextureBank.from_pairs(np.full_like(r, -30.0), r, ["a"] * 3 + ["b"] * 3, dyn_range_db=60.0,
                                  per_user=per_user, source=source)


def _gens(seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_from_residuals_keeps_per_user_and_owners():
    bank = _bank(per_user=2)
    assert (len(bank.residuals) == 4 and bank.residuals.dtype == torch.float16
            and bank.means.shape == (4, 1, 8, 8))
    assert list(bank.config.users) == ["a", "b"]
    assert sorted(bank.owners.tolist()) == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        TextureBank.from_pairs(np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 8)), ["a"], 60.0)


def test_add_draws_the_persons_own_residual_and_falls_back_to_all():
    bank = _bank()
    x = torch.full((4, 1, 8, 8), -30.0)
    out = bank.add(x, ["a", "b", "a", "b"], _gens(0, 4))
    assert (torch.equal(out[0], torch.full((1, 8, 8), -29.0))
            and torch.equal(out[1], torch.full((1, 8, 8), -31.0)))
    bank.register_to_config(choices=len(bank.owners) * 8)  # every (entry, shift) a candidate: equal means tie
    drawn = {float(bank.add(x[:1], ["nobody"], _gens(s, 1))[0, 0, 0, 0]) for s in range(40)}
    assert drawn == {-29.0, -31.0}  # a person without entries draws from everyone's
    assert bank.add(x[:1], [None], _gens(0, 1)).shape == (1, 1, 8, 8)


def test_add_is_a_function_of_the_generator_and_clips():
    rng = np.random.default_rng(0)
    bank = TextureBank.from_pairs(rng.uniform(-60, 0, (6, 1, 8, 8)), rng.normal(0, 5, (6, 1, 8, 8)),
                                  ["a"] * 6, 60.0)
    x = torch.full((2, 1, 8, 8), -1.0)
    first, again = bank.add(x, ["a", "a"], _gens(3, 2)), bank.add(x, ["a", "a"], _gens(3, 2))
    assert torch.equal(first, again)
    assert not torch.equal(first, bank.add(x, ["a", "a"], _gens(4, 2)))
    assert float(first.max()) <= 0.0 and float(first.min()) >= -60.0
    with pytest.raises(ValueError):
        bank.add(torch.zeros(2, 1, 4, 4), ["a", "a"], _gens(0, 2))


def test_add_takes_the_residual_of_the_nearest_reconstruction_at_its_time_shift():
    rng = np.random.default_rng(0)
    means = rng.uniform(-60, -20, (5, 1, 8, 16)).astype(np.float32)
    res = rng.normal(0, 3, (5, 1, 8, 16)).astype(np.float32)
    bank = TextureBank.from_pairs(means, res, ["a"] * 5, 60.0, per_user=5)
    bank.register_to_config(choices=1)  # the nearest only
    j = int(np.flatnonzero(np.isclose(bank.means.float().numpy(),
                                      torch.tensor(means[3]).half().float().numpy())
                           .all(axis=(1, 2, 3)))[0])
    x = torch.roll(bank.means[j].float(), 5, dims=-1)[None]  # entry 3's reconstruction, 5 frames later
    out = bank.add(x, ["a"], _gens(0, 1))
    want = (x[0] + torch.roll(bank.residuals[j].float(), 5, dims=-1)).clamp(-60, 0)
    assert torch.allclose(out[0], want)
    bank.register_to_config(roll_time=False)
    assert not torch.allclose(bank.add(x, ["a"], _gens(0, 1))[0], want)  # without shifts it cannot line up


def test_population_source_draws_other_peoples_residuals_and_random_shift_moves_it():
    bank = _bank(source="population")
    assert TextureBank().config.source == "population"  # the default since issue 35
    x = torch.full((4, 1, 8, 8), -30.0)
    out = bank.add(x, ["a", "b", "a", "b"], _gens(0, 4))
    assert out[:, 0, 0, 0].tolist() == [-31.0, -29.0, -31.0, -29.0]  # a gets b's residual, b gets a's
    assert _bank().merged(bank).config.source == "own" and bank.merged(_bank()).config.source == "population"
    rng = np.random.default_rng(0)
    means = rng.uniform(-60, -20, (1, 1, 8, 16)).astype(np.float32)
    fit = TextureBank.from_pairs(means, rng.normal(0, 3, (1, 1, 8, 16)), ["a"], 60.0, choices=1)
    rand = TextureBank.from_pairs(means, rng.normal(0, 3, (1, 1, 8, 16)), ["a"], 60.0, choices=1,
                                  shift="random")
    rand.residuals.copy_(fit.residuals)
    x = fit.means.float()
    def landed(out):  # the shifts k at which the residual lines up with the output
        return [k for k in range(16) if torch.allclose(
            out, (x[0] + torch.roll(fit.residuals[0].float(), k, -1)).clamp(-60, 0), atol=1e-3)]

    assert landed(fit.add(x, ["a"], _gens(0, 1))[0]) == [0]  # the fitted shift: its own reconstruction's
    assert len({k for s in range(12) for k in landed(rand.add(x, ["a"], _gens(s, 1))[0])}) > 2
    with pytest.raises(ValueError, match="source"):
        TextureBank(source="mine")


def test_merged_replaces_a_persons_entries():
    other = TextureBank.from_pairs(np.zeros((2, 1, 8, 8)), np.full((2, 1, 8, 8), 5.0), ["b", "c"], 60.0)
    m = _bank().merged(other)
    assert list(m.config.users) == ["a", "b", "c"]
    b = m.config.users.index("b")
    assert m.residuals[m.owners == b].float().unique().tolist() == [5.0]


def test_pipeline_saves_loads_and_samples_with_its_bank(tiny_pipeline_dir, tmp_path):
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    plain = sample(pipe, [0, 1], [7, 8], num_inference_steps=2)
    h, w = pipe.image_size
    x = np.random.default_rng(0).uniform(-60, 0, (6, 1, h, w)).astype(np.float32)
    pipe.texture = build_bank(pipe.vae, pipe.normalization, x, ["alice", "bob", "carol"] * 2, per_user=2)
    pipe.save(tmp_path / "p")
    loaded = DopplerPipeline.load(tmp_path / "p")
    assert loaded.texture is not None and torch.equal(loaded.texture.residuals, pipe.texture.residuals)
    a = sample(loaded, [0, 1], [7, 8], num_inference_steps=2)
    b = sample(loaded, [0, 1], [7, 8], num_inference_steps=2)
    assert torch.equal(a, b)  # still a function of the seed
    assert not torch.allclose(a, plain)
    # the denoising is untouched: the difference to the plain sample is the drawn residual, up to the clip
    inside = (plain > -59) & (plain < -1)
    assert float((a - plain)[inside].abs().mean()) > 0


def test_a_bank_of_another_shape_is_refused(tiny_pipeline_dir, tmp_path):
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    pipe.texture = TextureBank.from_pairs(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)), ["alice"], 60.0)
    pipe.save(tmp_path / "p")
    with pytest.raises(PipelineError, match="texture"):
        DopplerPipeline.load(tmp_path / "p")


def test_texture_cli_builds_and_removes_the_bank(tmp_path, capsys):
    data = _write_dataset(tmp_path / "data", users=3, per_user=6, size=32)
    torch.manual_seed(0)
    folder = tmp_path / "pipe"
    build_untrained_pipeline("tiny", ["user0", "user1", "someone"], dyn_range_db=60.0,
                             version="t").save(folder)
    before = (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert cli(["texture", "--pipeline", str(folder), "--data", str(data), "--per-user", "3"]) == 0
    out = capsys.readouterr().out
    assert "6 residuals of 2 people" in out and "user2" in out  # user2 is not served: skipped, and said so
    meta = json.loads((folder / "dopplergen.json").read_text())
    assert meta["texture"]["count"] == 6 and meta["texture"]["per_user"] == 3
    assert DopplerPipeline.load(folder).texture is not None
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert cli(["texture", "--pipeline", str(folder), "--remove"]) == 0
    assert (not (folder / "texture").exists()
            and "texture" not in json.loads((folder / "dopplergen.json").read_text()))
    assert DopplerPipeline.load(folder).texture is None
    shutil.rmtree(data / "user0"), shutil.rmtree(data / "user1")
    (data / "manifest.csv").write_text("path,user,split\n"
                                       + "".join(f"user2/{i:03d}.npy,user2,train\n" for i in range(6)))
    assert cli(["texture", "--pipeline", str(folder), "--data", str(data)]) == 2
    assert "serves" in capsys.readouterr().err
