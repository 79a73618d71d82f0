"""The evaluator's few-shot adaptation: new user rows learnt from a few recordings, everything else frozen, on
every route."""

import numpy as np
import pytest
import torch

from training.eval.fewshot import FewShotConfig, adapt_new_users


@pytest.mark.parametrize("route", ["kl", "vq-latent", "vq-diffusion"])
def test_fewshot_adaptation_learns_only_new_user_rows(route, tiny_pipeline_dir):
    from models.pipeline import DopplerPipeline, build_untrained_pipeline
    from models.sampling import sample

    torch.manual_seed(0)
    pop = (DopplerPipeline.load(tiny_pipeline_dir) if route == "kl"
           else build_untrained_pipeline("tiny", ["p0", "p1", "p2"], route=route))
    unet_before = {k: v.clone() for k, v in pop.denoiser.state_dict().items()}
    vae_before = {k: v.clone() for k, v in pop.vae.state_dict().items()}
    x = np.random.default_rng(0).uniform(-60, 0, size=(4, 1, 32, 32)).astype(np.float32)
    cfg = dict(batch_size=4, time_shifts=2, seed=0)
    p0, _ = adapt_new_users(pop, x, np.array([0, 0, 1, 1]), ["dave", "erin"], FewShotConfig(steps=0, **cfg))
    p3, log = adapt_new_users(pop, x, np.array([0, 0, 1, 1]), ["dave", "erin"], FewShotConfig(steps=3, **cfg))
    assert p3.users == ["dave", "erin"] and p3.meta["fewshot"]["n_recordings"] == 4
    w0, w3 = p0.user_encoder.embedding.weight, p3.user_encoder.embedding.weight
    assert not torch.equal(w0[:2], w3[:2])  # the new users' rows were learnt
    assert torch.equal(w3[2], pop.user_encoder.embedding.weight[pop.user_encoder.null_index])  # null row kept
    # UNet / Transformer frozen
    assert all(torch.equal(v, p3.denoiser.state_dict()[k]) for k, v in unet_before.items())
    assert all(torch.equal(v, p3.vae.state_dict()[k]) for k, v in vae_before.items())  # VAE frozen
    assert np.isfinite(log["loss_last"])
    assert p3.route == route and sample(p3, [0, 1], [1, 2], num_inference_steps=2).shape == (2, 1, 32, 32)


def test_fewshot_targets_do_not_inherit_a_population_namesakes_conditions(tmp_path):
    """Population and targets both name people user00, ...: a target's omitted conditions must come from the
    population's whole distribution, not from the population person who happens to share its name."""
    from models.condition_stats import resolve_conditions
    from models.pipeline import DopplerPipeline
    from tests.models.test_conditions import save_conditioned_pipeline

    pop = DopplerPipeline.load(save_conditioned_pipeline(tmp_path / "pop"))  # alice slow, bob fast
    assert "alice" in pop.meta["conditions"]["speed_mps"]["per_user"]
    x = np.random.default_rng(0).uniform(-60, 0, size=(2, 1, 32, 32)).astype(np.float32)
    pipe, _ = adapt_new_users(pop, x, np.array([0, 1]), ["alice", "zoe"],
                              FewShotConfig(steps=0, batch_size=2, time_shifts=1, seed=0))
    desc = pipe.meta["conditions"]
    assert all("per_user" not in e for e in desc.values()) and desc["speed_mps"]["all"] == (
        pop.meta["conditions"]["speed_mps"]["all"])
    assert "per_user" in pop.meta["conditions"]["speed_mps"]  # the population pipeline itself is untouched
    speeds = [resolve_conditions(desc, ["speed_mps"], "alice", None, s)["speed_mps"] for s in range(40)]
    assert max(speeds) > 1.2  # drawn over everyone's speeds, not only the population alice's 0.8-1.0 m/s


def test_fewshot_targets_draw_their_own_recordings_conditions(tmp_path):
    """With the k recordings' manifest columns, the targets are enrolled under their known conditions and
    their omitted conditions are drawn from their own recordings (models.condition_stats.add_people)."""
    from models.condition_stats import resolve_conditions
    from models.pipeline import DopplerPipeline
    from tests.models.test_conditions import save_conditioned_pipeline

    pop = DopplerPipeline.load(save_conditioned_pipeline(tmp_path / "pop"))
    x = np.random.default_rng(0).uniform(-60, 0, size=(4, 1, 32, 32)).astype(np.float32)
    cfg = FewShotConfig(steps=2, batch_size=2, time_shifts=1, seed=0)
    cols = {"speed_mps": np.array([1.88, 1.85, 0.81, 0.82]), "group": np.array(["s0"] * 4)}
    pipe, _ = adapt_new_users(pop, x, np.array([0, 0, 1, 1]), ["zoe", "yan"], cfg, columns=cols)
    plain, _ = adapt_new_users(pop, x, np.array([0, 0, 1, 1]), ["zoe", "yan"], cfg)
    desc = pipe.meta["conditions"]
    assert set(desc["speed_mps"]["per_user"]) == {"zoe", "yan"} and "aspect_deg" not in (
        {n for n, e in desc.items() if "per_user" in e} - {"speed_mps"})
    for s in range(20):
        assert resolve_conditions(desc, ["speed_mps"], "zoe", None, s)["speed_mps"] >= 1.85
        assert resolve_conditions(desc, ["speed_mps"], "yan", None, s)["speed_mps"] <= 0.82
    # the known speeds reach the enrolment: other rows than with every condition absent
    assert not torch.equal(pipe.user_encoder.embedding.weight, plain.user_encoder.embedding.weight)


def test_a_trials_k_columns_are_its_own_recordings_with_the_fixed_activity(tmp_path):
    from types import SimpleNamespace

    from training.eval.augmentation import select_k_per_user
    from training.eval.context import Data

    y = np.repeat([0, 1], 6)
    x = np.arange(12, dtype=np.float32).reshape(12, 1, 1, 1)
    speed = np.linspace(0.6, 1.7, 12)
    d = Data(x, y, [f"p{i}" for i in range(12)], x[:2], y[:2], ["t0", "t1"], ["a", "b"],
             {"simulate": {"activities": ["walk"]}}, "fp", {"speed_mps": speed})
    pipe = SimpleNamespace(condition_encoder=SimpleNamespace(
        names=["speed_mps", "activity"], spec=lambda n: {"values": ["run", "walk"]}))
    idx = select_k_per_user(y, 3, seed=4)
    cols = d.k_columns(pipe, 3, 4, x[idx])
    assert np.array_equal(cols["speed_mps"], speed[idx]) and list(cols["activity"]) == ["walk"] * 6
    with pytest.raises(ValueError, match="not select_k_per_user's"):
        d.k_columns(pipe, 3, 5, x[idx])
