"""Filters of synthetic spectrograms: kinematic sifting, classifier confidence, k-center diversity, the
report."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from training.eval import filters as F


@pytest.fixture(scope="module")
def walks():
    """Simulated walks of one person at the preferred speed, and the same person 1.6x faster."""
    from training.data.simulate import SimulateConfig, dataset_meta
    from training.data.users import make_user, simulate_recording

    p = make_user(3, "u")
    fast = dataclasses.replace(p, speed_mps=p.speed_mps * 1.6)
    meta = dataset_meta(SimulateConfig(users=1, size=64, preview_per_user=0), [p])
    real = np.stack([simulate_recording(p, j, size=64).db for j in range(8)])[:, None]
    normal = np.stack([simulate_recording(p, j, size=64).db for j in range(20, 24)])[:, None]
    wrong = np.stack([simulate_recording(fast, j, size=64).db for j in range(3)])[:, None]
    return meta, real, normal, wrong


def test_physics_filter_rejects_a_walk_at_the_wrong_torso_speed(walks):
    meta, real, normal, wrong = walks
    x = np.concatenate([wrong[:1], normal, wrong[1:]])  # candidates; 0, 5, 6 are the fast walks
    y = np.zeros(len(x), np.int64)
    cfg = F.FilterConfig(filters=("physics",))
    sel = F.filter_candidates(x, y, 4, 1, cfg, meta=meta, ref_readouts=F.readouts(real, meta),
                              ref_y=np.zeros(len(real), np.int64))
    assert set(sel.index.tolist()) <= {1, 2, 3, 4}, sel.report
    assert len(sel.index) >= 3  # the walks at the person's own speed pass
    rep = sel.report
    assert rep["per_filter"]["physics"]["rejected"] >= 3
    assert rep["rejection_rate"] == pytest.approx(1 - len(sel.index) / len(x))
    assert rep["physics_reference"] == "real reference recordings"
    # The torso read-out is what separates them: the fast walks' torso speed is ~1.6x the real median.
    r = F.readouts(x, meta)
    assert np.all(r[[0, 5, 6], 0] > 1.4 * np.median(F.readouts(real, meta)[:, 0]))


def test_physics_without_reference_removes_outliers_among_the_candidates(walks):
    meta, _, normal, wrong = walks
    x = np.concatenate([normal, normal, wrong[:1]])  # 8 at the person's speed, 1 fast
    sel = F.filter_candidates(x, np.zeros(len(x), np.int64), 9, 1,
                              F.FilterConfig(filters="physics"), meta=meta)
    assert 8 not in sel.index
    assert sel.report["physics_reference"] == "the person's own candidates"


class FixedLogits:
    """A stand-in classifier with fixed logits and 2-d features."""

    def __init__(self, logits, feats=None):
        self._l, self._f = np.asarray(logits, float), feats

    def logits(self, x):
        return self._l

    def features(self, x):
        return np.asarray(self._f, float)


def test_confidence_keeps_samples_the_classifier_gives_to_the_requested_person():
    logits = np.array([[3.0, 0.0], [0.0, 3.0], [0.2, 0.0], [0.0, 0.1], [0.0, 5.0]])
    y = np.array([0, 0, 0, 1, 1])
    p = F.confidence(FixedLogits(logits), np.zeros((5, 1, 4, 4)), y)
    assert p[0] == pytest.approx(np.exp(3) / (np.exp(3) + 1))
    sel = F.filter_candidates(np.zeros((5, 1, 4, 4)), y, 2, 2, F.FilterConfig(filters="confidence", tau=0.5),
                              clf=FixedLogits(logits))
    assert sel.index.tolist() == [0, 2, 3, 4]  # sample 1 is assigned to person 1: rejected
    assert sel.report["per_filter"]["confidence"] == dict(rejected=1, rate=0.2)
    assert sel.report["shortfall"] == 0
    strict = F.filter_candidates(np.zeros((5, 1, 4, 4)), y, 2, 2,
                                 F.FilterConfig(filters="confidence", tau=0.9), clf=FixedLogits(logits))
    assert strict.index.tolist() == [0, 4] and strict.report["shortfall"] == 2
    filled = F.filter_candidates(np.zeros((5, 1, 4, 4)), y, 2, 2,
                                 F.FilterConfig(filters="confidence", tau=0.9, fill=True),
                                 clf=FixedLogits(logits))
    # best rejects by confidence
    assert filled.index.tolist() == [0, 2, 4, 3] and filled.report["topped_up"] == 2


def test_k_center_spreads_the_selection_in_feature_space():
    feats = np.array([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [10, 0], [0, 10]], float)
    assert sorted(F.k_center(feats, 3, start=0).tolist()) == [0, 4, 5]
    y = np.zeros(6, np.int64)
    plain = F.select(y, 3, 1, F.FilterConfig(filters=()))
    assert plain.index.tolist() == [0, 1, 2]
    diverse = F.select(y, 3, 1, F.FilterConfig(filters="diversity"), feats=feats, conf=np.ones(6))
    assert sorted(diverse.index.tolist()) == [0, 4, 5]
    assert diverse.report["per_filter"]["diversity"]["rejected"] == 3


def test_filter_options_are_validated():
    assert F.parse_filters("diversity,physics") == ("physics", "diversity")
    assert F.parse_filters("none") == ()
    with pytest.raises(ValueError, match="unknown filter"):
        F.parse_filters("physics,sharpness")
    with pytest.raises(ValueError):
        F.FilterConfig(filters="physics", factor=0.5)
    assert F.FilterConfig(filters="physics", factor=2.5).candidates(10) == 25
    assert F.FilterConfig().candidates(10) == 10  # no filter: no over-generation
    with pytest.raises(ValueError, match="classifier"):
        F.filter_candidates(np.zeros((2, 1, 4, 4)), np.zeros(2, np.int64), 1, 1,
                            F.FilterConfig(filters="confidence"))
    line = F.summary_line(F.select(np.zeros(4, np.int64), 2, 1, F.FilterConfig(filters="confidence"),
                                   conf=np.array([0.9, 0.1, 0.2, 0.8])).report)
    assert "kept 2 of 4" in line and "confidence 50.0%" in line


def test_people_without_candidates_are_not_counted_short():
    sel = F.select(np.array([2, 2, 2]), 2, 4, F.FilterConfig(filters="confidence"),
                   conf=np.array([0.9, 0.2, 0.7]))
    assert sel.index.tolist() == [0, 2]
    assert sel.report["requested"] == 2 and sel.report["shortfall"] == 0


def test_export_filter_against_a_reference_dataset(tmp_path):
    from training.data.simulate import SimulateConfig, simulate_dataset, user_profiles
    from training.data.users import simulate_recording

    cfg = SimulateConfig(users=2, per_user=8, size=64, seed=4, preview_per_user=0)
    meta = simulate_dataset(tmp_path / "ref", cfg, progress=False)
    p = user_profiles(cfg)[1]
    normal = np.stack([simulate_recording(p, j, size=64).db for j in range(30, 33)])[:, None]
    fast = simulate_recording(dataclasses.replace(p, speed_mps=p.speed_mps * 1.6), 0, size=64).db[None, None]
    x = np.concatenate([fast, normal])
    persons = [p.user_id] * 4
    sel = F.filter_with_reference(x, persons, 4, F.FilterConfig(filters="physics"), meta=meta,
                                  reference=str(tmp_path / "ref"))
    assert 0 not in sel.index and len(sel.index) >= 2
    assert "ref (train split)" in sel.report["physics_reference"]
    with pytest.raises(SystemExit, match="needs --reference"):
        F.filter_with_reference(x, persons, 4, F.FilterConfig(filters="confidence"), meta=meta)
    with pytest.raises(SystemExit, match="no recordings of"):
        F.filter_with_reference(x, ["stranger"] * 4, 4, F.FilterConfig(filters="confidence"), meta=meta,
                                reference=str(tmp_path / "ref"))
