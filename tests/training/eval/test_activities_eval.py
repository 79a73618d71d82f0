"""The evaluator's Activities section: per-activity affinity rows, new people enrolled from walking only, the
headline targets, and the report's Markdown, on a tiny random pipeline conditioned on activity."""

import json
import math

import numpy as np
import pytest
import torch

from training.eval import activities_report
from training.eval.activities import _pick


@pytest.fixture(scope="module")
def act(tmp_path_factory):
    from models.condition_stats import describe_conditions, encoder_specs
    from models.conditions import ConditionEncoder
    from models.pipeline import build_untrained_pipeline
    from training.data.dataset import load_dataset
    from training.data.simulate import SimulateConfig, simulate_dataset

    root = tmp_path_factory.mktemp("act")
    simulate_dataset(root / "data", SimulateConfig(users=3, per_user=12, size=32, seed=5, preview_per_user=0,
                                                   activities=("walk", "fall")), progress=False)
    ds = load_dataset(root / "data")
    tr = ds.filter("train")
    names = ["speed_mps", "aspect_deg", "activity"]
    torch.manual_seed(0)
    prov = dict(fingerprint=ds.fingerprint, meta=ds.meta, simulate=ds.meta["simulate"], users=ds.users)
    pipe = build_untrained_pipeline("tiny", ds.users, version="test", dataset=prov)
    pipe.meta["conditions"] = describe_conditions({n: tr.extra[n] for n in names},
                                                  [ds.users[i] for i in tr.labels], names)
    pipe.condition_encoder = ConditionEncoder(conditions=encoder_specs(pipe.meta["conditions"], names),
                                              cross_attention_dim=32)
    pipe.save(root / "pipe")
    return root


@pytest.mark.slow
def test_evaluate_quick_reports_every_activity_and_the_enrolled_people(act, tmp_path):
    from training.cli import main

    out = tmp_path / "report"
    rc = main(["evaluate", "--pipeline", str(act / "pipe"), "--data", str(act / "data"), "--out", str(out),
               "--quick", "--no-sweep", "--threads", "1"])
    assert rc == 0
    res = json.loads((out / "report.json").read_text())
    sec = res["activities"]
    assert sec["activities"] == ["fall", "walk"]
    rows = {r["activity"]: r for r in sec["trained"]["rows"]}
    assert set(rows) == {"fall", "walk"}
    for r in rows.values():
        assert 0.0 <= r["activity_generated"] <= 1.0 and 0.0 <= r["identity_generated"] <= 1.0
        assert r["n_generated"] == 3 * 2  # 3 people x 2 per person in --quick
    new = sec["new_people"]
    assert new["people"] == 2 and new["k"] == 5 and len(new["gains"]["activity"]) == len(new["seeds"])
    assert {r["activity"] for r in new["identity"]} == {"fall", "walk"}
    assert all(math.isfinite(g) for g in new["gains"]["person"])
    names = [t["name"] for t in res["targets"]]
    assert any(n.startswith("activity affinity / real, worst activity") for n in names)
    assert "enrolled person (5 walking) recognised while falling / real" in names
    md = (out / "report.md").read_text()
    assert "## Activities" in md and "New people enrolled from 5 walking recordings" in md
    assert (out / "figures" / "activities.png").is_file()


def test_a_pipeline_without_activity_skips_the_section():
    res = {"activities": {"skipped": "the pipeline is not conditioned on activity"}}
    assert activities_report.targets(res) == []
    md = "\n".join(activities_report.markdown(res))
    assert "Skipped: the pipeline is not conditioned on activity." in md


def test_pick_draws_k_per_person_and_activity_by_seed():
    labels = np.repeat([0, 1], 12)
    act = np.tile(np.repeat(["walk", "fall"], 6), 2)
    a = _pick(labels, act, ["fall", "walk"], 5, seed=0)
    assert len(a) == 20 and len(set(a)) == 20
    for c in (0, 1):
        for name in ("walk", "fall"):
            assert ((labels[a] == c) & (act[a] == name)).sum() == 5
    assert np.array_equal(a, _pick(labels, act, ["fall", "walk"], 5, seed=0))
    assert not np.array_equal(a, _pick(labels, act, ["fall", "walk"], 5, seed=1))


def test_walking_targets_request_walking_from_an_activity_pipeline():
    """Few-shot samples for a one-activity simulated set request that activity; anything else draws."""
    from types import SimpleNamespace

    from training.eval.context import fixed_conditions

    spec = {"activity": {"values": ["fall", "run", "walk"]}}
    acts = SimpleNamespace(condition_encoder=SimpleNamespace(names=["speed_mps", "activity"], spec=spec.get))
    walking = {"simulate": {"seed": 3}}  # a walking-only simulate writes no "activities"
    assert fixed_conditions(acts, walking) == {"activity": "walk"}
    assert fixed_conditions(acts, {"simulate": {"activities": ["run"]}}) == {"activity": "run"}
    assert fixed_conditions(acts, {"simulate": {"activities": ["walk", "fall"]}}) is None
    assert fixed_conditions(acts, {"simulate": {"activities": ["sit"]}}) is None  # not in the vocabulary
    assert fixed_conditions(acts, {"import": {"format": "png"}}) is None  # imported: nothing known
    speed_only = SimpleNamespace(condition_encoder=SimpleNamespace(names=["speed_mps"]))
    assert fixed_conditions(speed_only, walking) is None
    assert fixed_conditions(SimpleNamespace(condition_encoder=None), walking) is None
