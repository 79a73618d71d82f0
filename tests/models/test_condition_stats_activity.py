"""Per-activity condition statistics: an empty (NaN) speed trains as absent, and an omitted numeric condition
is drawn for the request's activity (a fall never gets a walking speed, a run never a walking one)."""

import math

import numpy as np
import pytest

from models.condition_stats import describe_conditions, resolve_conditions
from models.conditions import ConditionEncoder


def _columns():
    users = ["a"] * 6 + ["b"] * 6
    act = ["walk", "run", "fall"] * 4
    speed = np.array([1.2, 2.6, np.nan] * 4)
    aspect = np.linspace(-30, 30, 12)
    return {"speed_mps": speed, "aspect_deg": aspect, "activity": np.array(act)}, users


def test_describe_keeps_nan_out_of_the_stats_and_records_per_activity():
    cols, users = _columns()
    desc = describe_conditions(cols, users, ["speed_mps", "aspect_deg", "activity"])
    sp = desc["speed_mps"]
    assert sp["missing"] == 4
    assert sp["range"] == [1.2, 2.6]
    assert sp["per_activity"]["fall"] == {"absent": True}
    assert sp["per_activity"]["run"]["all"]["mean"] == pytest.approx(2.6)
    assert desc["activity"]["values"] == ["fall", "run", "walk"]
    # without an activity condition there is no per-activity block
    assert "per_activity" not in describe_conditions(cols, users, ["speed_mps"])["speed_mps"]


def test_a_column_without_any_value_is_refused():
    cols, users = _columns()
    cols["speed_mps"] = np.full(12, np.nan)
    with pytest.raises(ValueError, match="no finite values"):
        describe_conditions(cols, users, ["speed_mps", "activity"])


def test_omitted_speed_is_drawn_for_the_activity():
    cols, users = _columns()
    names = ["speed_mps", "aspect_deg", "activity"]
    desc = describe_conditions(cols, users, names)
    for seed in range(20):
        fall = resolve_conditions(desc, names, "a", {"activity": "fall"}, seed)
        assert fall["speed_mps"] is None and fall["activity"] == "fall"
        run = resolve_conditions(desc, names, "a", {"activity": "run"}, seed)
        assert run["speed_mps"] == pytest.approx(2.6)
        drawn = resolve_conditions(desc, names, "b", None, seed)  # activity drawn first, speed for it
        expected = {"walk": 1.2, "run": 2.6, "fall": None}[drawn["activity"]]
        assert drawn["speed_mps"] == (None if expected is None else pytest.approx(expected))
        assert list(drawn) == names  # the pipeline's order, whatever the draw order


def test_nan_and_none_are_absent_in_the_values_tensor():
    enc = ConditionEncoder([{"name": "speed_mps", "type": "numeric", "range": [0.5, 3.0]},
                            {"name": "activity", "type": "categorical", "values": ["fall", "walk"]}],
                           cross_attention_dim=8)
    v = enc.values_tensor([{"speed_mps": float("nan"), "activity": "fall"}, {"speed_mps": None},
                           {"speed_mps": 1.0, "activity": "walk"}])
    assert math.isnan(v[0, 0]) and v[0, 1] == 0 and math.isnan(v[1, 0]) and math.isnan(v[1, 1])
    assert v[2, 0] == 1.0 and v[2, 1] == 1
