"""Student-t intervals of the mean and of paired differences (training.eval.stats)."""

from __future__ import annotations

import math

import pytest

from training.eval.stats import format_ci, paired_difference, t_interval


def test_t_interval_matches_a_hand_computed_case():
    # mean 3, sd sqrt(2.5), se sqrt(0.5); t_{0.975, 4} = 2.776445
    ci = t_interval([1, 2, 3, 4, 5])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert ci["mean"] == pytest.approx(3.0)
    assert ci["lo"] == pytest.approx(3 - half, abs=1e-5) and ci["hi"] == pytest.approx(3 + half, abs=1e-5)
    assert ci["excludes_zero"] is True
    assert t_interval([1, 2, 3, 4, 5], confidence=0.90)["half_width"] < half  # narrower at 90%


def test_paired_difference_uses_the_per_pair_differences():
    # Both arms vary a lot across seeds but move together: the paired interval is tight and excludes 0.
    a, b = [0.60, 0.70, 0.80, 0.65, 0.75], [0.58, 0.67, 0.78, 0.62, 0.73]
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(0.024)
    assert d["excludes_zero"] and d["lo"] > 0
    assert not t_interval([x - y for x, y in zip(a, [0.70, 0.60, 0.65, 0.80, 0.75],
                                                 strict=True)])["excludes_zero"]
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1])


def test_degenerate_inputs_and_formatting():
    one = t_interval([0.05])
    assert one["n"] == 1 and math.isnan(one["lo"]) and not one["excludes_zero"]
    assert t_interval([])["n"] == 0
    assert format_ci(t_interval([0.01, 0.02, 0.03])) == "+2.0 [-0.5, +4.5]"
    assert format_ci(one) == "+5.0 (n = 1)"
