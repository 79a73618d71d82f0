"""The simulator covers the condition space on request (issue 15) and records each recording's actual
conditions."""

from __future__ import annotations

import csv
import json

import numpy as np

from training.cli import main
from training.data.dataset import load_dataset
from training.data.users import MAX_SPEED_MPS, Variation, make_user, recording_kwargs


def test_cover_conditions_spans_aspect_both_sides_and_speeds_around_the_persons_own():
    profile = make_user(3, "u")
    cover = Variation(aspect_deg=70.0, speed_span=0.3)
    kw = [recording_kwargs(profile, j, cover) for j in range(400)]
    aspect = np.array([k["aspect_deg"] for k in kw])
    speed = np.array([k["speed_mps"] for k in kw]) / profile.speed_mps
    assert aspect.min() < -60 and aspect.max() > 60 and np.abs(aspect).max() <= 70
    assert ((aspect > -10) & (aspect < 10)).sum() > 20  # frontal walks too
    hi = min(1.3, MAX_SPEED_MPS / profile.speed_mps)
    assert (speed.min() >= 0.7 - 1e-9 and speed.max() <= hi + 1e-9
            and speed.min() < 0.75 and speed.max() > hi - 0.05)
    # the default spread is unchanged: normal around the preferred speed, +-30 deg
    default = [recording_kwargs(profile, j) for j in range(400)]
    d_speed = np.array([k["speed_mps"] for k in default]) / profile.speed_mps
    assert abs(d_speed.std() - 0.08) < 0.015 and max(abs(k["aspect_deg"]) for k in default) <= 30
    assert "speed_span" not in Variation().to_dict()  # the default dataset's meta.json keeps its bytes


def test_cli_cover_conditions_writes_the_actual_conditions_as_manifest_columns(tmp_path):
    out = tmp_path / "c"
    args = ["simulate", "--users", "2", "--per-user", "6", "--size", "16", "--preview-per-user", "0"]
    assert main([*args, "--out", str(out), "--cover-conditions"]) == 0
    variation = json.loads((out / "meta.json").read_text())["simulate"]["variation"]
    assert variation["aspect_deg"] == 70.0 and variation["speed_span"] == 0.3
    ds = load_dataset(out)
    for col in ("speed_mps", "aspect_deg", "range_m", "snr_db"):
        assert ds.extra[col].dtype.kind == "f" and len(ds.extra[col]) == 12
    assert main([*args, "--out", str(tmp_path / "bad"), "--aspect-deg", "95"]) == 2


def test_reader_keeps_numeric_and_categorical_columns(tmp_path):
    (tmp_path / "a").mkdir()
    rows = []
    for i in range(3):
        np.save(tmp_path / "a" / f"{i}.npy", -np.ones((8, 8), np.float32))
        rows.append({"path": f"a/{i}.npy", "user": "a", "split": ("train", "val", "test")[i],
                     "speed_mps": 1.0 + i / 10, "activity": ("walk", "run", "walk")[i]})
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ds = load_dataset(tmp_path)
    assert (ds.extra["speed_mps"].tolist() == [1.0, 1.1, 1.2]
            and ds.extra["activity"].tolist() == ["walk", "run", "walk"])
    assert ds.filter("val").extra["activity"].tolist() == ["run"]
