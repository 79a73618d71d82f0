"""Metric functions: each test has a case that must come out near zero/chance and one that must not."""

import numpy as np
import pytest
import torch

from training.eval.metrics import (
    fit_logistic,
    frechet_distance,
    mean_std,
    physics_consistency,
    reconstruction_metrics,
    relative_error,
    two_sample_test,
)


def _gauss(n, d=8, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_frechet_zero_for_identical_and_grows_with_shift():
    a = _gauss(400)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    same = frechet_distance(a, _gauss(400, seed=1))  # two draws: only the small-sample bias
    shifted = frechet_distance(a, _gauss(400, shift=1.0, seed=1))  # mean term alone adds d * 1^2 = 8
    scaled = frechet_distance(a, 2.0 * _gauss(400, seed=1))  # covariance term: d * (2 - 1)^2 = 8
    assert same < 0.5
    assert shifted == pytest.approx(8.0 + same, rel=0.2)
    assert scaled == pytest.approx(8.0, rel=0.25)
    assert frechet_distance(a, _gauss(400, shift=2.0, seed=1)) > shifted


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_two_sample_test_chance_for_same_distribution_and_high_for_different():
    same = two_sample_test(_gauss(600, seed=0), _gauss(600, seed=1), fit_logistic, seed=0)
    diff = two_sample_test(_gauss(600, seed=0), _gauss(600, shift=1.5, seed=1), fit_logistic, seed=0)
    assert abs(same["accuracy"] - 0.5) < 4 * same["stderr"]  # ~0.5 +- 0.04
    assert diff["accuracy"] > 0.95
    assert same["n_test"] == 600 and same["n_train"] == 600  # balanced halves of min(len) per set


def test_two_sample_test_balances_unequal_sets():
    out = two_sample_test(_gauss(100), _gauss(40, seed=1), fit_logistic, seed=0)
    assert out["n_test"] == 40 and out["n_train"] == 40


def test_reconstruction_metrics_perfect_and_noisy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 32, 32, generator=g) * 2 - 1
    perfect = reconstruction_metrics(x, x.clone(), dyn_range_db=60)
    assert perfect["ssim"] == pytest.approx(1.0,
                                            abs=1e-4) and perfect["psnr_db"] > 60 and perfect["mae_db"] == 0
    noisy = reconstruction_metrics(x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
                                   dyn_range_db=60)
    # noise std 0.1 in a data range of 2 -> PSNR about 20 log10(2 / 0.1) = 26 dB
    assert 24 < noisy["psnr_db"] < 28 and noisy["ssim"] < 0.95


def test_relative_error_and_physics_table():
    assert relative_error([1.0, 1.2, 0.8], [1.1, 1.1, 1.1]) == pytest.approx(0.1)
    assert np.isnan(relative_error([1.0], [np.nan]))
    real = {"a": {"torso_mps": [1.0, 1.0], "cadence_spm": [100, 100]},
            "b": {"torso_mps": [2.0], "cadence_spm": [90]}}
    gen = {"a": {"torso_mps": [1.05, 1.05], "cadence_spm": [100, 100]},
           "b": {"torso_mps": [1.0], "cadence_spm": [99]}}
    out = physics_consistency(real, gen)
    assert out["per_user"]["a"]["torso_mps"]["rel_error"] == pytest.approx(0.05)
    assert out["mean_rel_error"]["torso_mps"] == pytest.approx((0.05 + 0.5) / 2)
    assert out["max_rel_error"]["cadence_spm"] == pytest.approx(0.1)


def test_mean_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2)), "n": 2}
    assert mean_std([4.0])["std"] == 0.0


def test_physics_counts_a_user_without_valid_generated_readouts_as_full_error():
    out = physics_consistency({"a": {"cadence_spm": [100.0]}, "b": {"cadence_spm": [100.0]}},
                              {"a": {"cadence_spm": [np.nan, np.nan]}, "b": {"cadence_spm": [100.0]}})
    assert out["per_user"]["a"]["cadence_spm"]["rel_error"] == 1.0
    assert out["per_user"]["a"]["cadence_spm"]["generated_valid"] == 0.0
    assert out["mean_rel_error"]["cadence_spm"] == pytest.approx(0.5)


# ---- physics read-outs through the dataset's meta axes (the evaluator's path) ------------------------------
def test_kinematic_readouts_match_the_simulated_speed_and_cadence(tmp_path):
    from training.data.dataset import load_dataset
    from training.data.simulate import SimulateConfig, simulate_dataset
    from training.eval.metrics import kinematic_readouts

    simulate_dataset(tmp_path / "d", SimulateConfig(users=1, per_user=6, size=64, seed=3, preview_per_user=0),
                     progress=False)
    ds = load_dataset(tmp_path / "d")
    r = kinematic_readouts(ds.x, ds.labels, ds.users, ds.meta)[ds.users[0]]
    radial = ds.extra["speed_mps"] * np.cos(np.radians(ds.extra["aspect_deg"]))
    assert np.median(np.asarray(r["torso_mps"]) / radial) == pytest.approx(1.0, abs=0.1)
    assert np.nanmedian(r["cadence_spm"]) == pytest.approx(np.median(120.0 / ds.extra["cycle_s"]), rel=0.1)
    assert 3.0 < np.median(np.asarray(r["envelope_mps"]) / radial) < 6.0
