"""Honest quick reports: a reference classifier at chance makes the classifier-based targets "not
measurable", never "met" (issue 37: `evaluate --quick` said 3/3 met at 25% on 4 people)."""

from training.eval.report import TARGETS, at_chance, targets


def _res(trtr: float, users: int = 4, n_test: int = 8) -> dict:
    return dict(data=dict(users=[f"u{i}" for i in range(users)], n_test=n_test),
                gan=dict(trtr=trtr, affinity_ratio=1.0, tstr_ratio=1.0),
                fidelity=dict(c2st=dict(accuracy=0.5)),
                augmentation=dict(summary={"5": {"gain": {"mean": 0.1}}}),
                physics=dict(mean_rel_error={"torso": 0.05}))


def test_chance_is_told_within_a_few_points_or_two_standard_errors():
    assert at_chance(_res(0.25)) is not None  # 4 people: chance is 25%
    assert at_chance(_res(0.25, n_test=4000))["margin"] == 0.05
    assert at_chance(_res(0.29, n_test=4000)) is not None and at_chance(_res(0.31, n_test=4000)) is None
    assert at_chance(_res(0.55, n_test=8)) is not None  # 8 test recordings: 2 s.e. at chance is ~31 points
    assert at_chance(_res(0.95, n_test=8)) is None


def test_targets_measured_by_a_classifier_at_chance_are_not_measurable():
    weak = {t["name"]: t for t in targets(_res(0.25), TARGETS)}
    for name in ("affinity / real-test accuracy", "TSTR / TRTR", "augmentation gain at k=5",
                 "two-sample test accuracy"):
        assert weak[name]["pass"] is None and weak[name]["measurable"] is False, name
    assert weak["physics rel. error: torso (mean over users)"]["pass"] is True  # no classifier in it
    strong = {t["name"]: t for t in targets(_res(0.95, n_test=400), TARGETS)}
    assert strong["TSTR / TRTR"]["pass"] is True and "measurable" not in strong["TSTR / TRTR"]
