"""The privacy section (training/eval/privacy.py) and `generate --min-distance-db`: the distance equals a
brute-force loop, a generator that returns its training recordings fails the targets, one that returns new
recordings of the same people passes, and generate drops copies."""

import json

import numpy as np
import pytest

from tests.training.eval.test_evaluate import sim  # noqa: F401  (the tiny simulated data set and pipeline)
from training.eval import privacy
from training.eval.report import TARGETS


def brute_force(x, ref):
    out = np.zeros((len(x), len(ref)))
    for i, a in enumerate(x):
        for j, b in enumerate(ref):
            out[i, j] = min(np.sqrt(np.mean((a - np.roll(b, k, axis=-1)) ** 2)) for k in range(a.shape[-1]))
    return out


def test_distance_matches_a_brute_force_loop():
    rng = np.random.default_rng(0)
    x, ref = rng.normal(-30, 8, (5, 2, 6, 9)), rng.normal(-30, 8, (4, 2, 6, 9))
    np.testing.assert_allclose(privacy.distances_db(x, ref, chunk=2), brute_force(x, ref), atol=1e-9)
    # a shifted copy is at distance 0; no shift search: the plain RMS
    shifted = np.roll(ref[1:2], 3, axis=-1)
    assert privacy.distances_db(shifted, ref)[0, 1] == pytest.approx(0, abs=1e-6)
    plain = np.sqrt(((x[:, None] - ref[None]) ** 2).mean((2, 3, 4)))
    np.testing.assert_allclose(privacy.distances_db(x, ref, shift=False), plain, atol=1e-9)


def test_auc_and_tpr_at_fpr():
    assert privacy.auc([3, 4], [1, 2]) == 1.0 and privacy.auc([1, 2], [3, 4]) == 0.0
    assert privacy.auc([1, 1], [1, 1]) == 0.5
    neg = np.arange(200.0)
    assert privacy.tpr_at_fpr([500.0, 197.5, 0.0], neg) == pytest.approx(2 / 3)  # 2 of 200 above 197


def people(rng, n_people, per_person, shape=(1, 16, 12)):
    """Recordings of n_people: a person's pattern, randomly shifted in time, plus speckle."""
    pats = rng.normal(-30, 10, (n_people, *shape))
    x, y = [], []
    for p in range(n_people):
        for _ in range(per_person):
            x.append(np.roll(pats[p], rng.integers(shape[-1]), axis=-1) + rng.normal(0, 4, shape))
            y.append(p)
    return np.asarray(x), np.asarray(y)


def judged(stats):
    rows = privacy.targets({"privacy": {"groups": {"trained": stats}}})
    return {name: (v >= TARGETS[k] if op == ">=" else v <= TARGETS[k]) for name, v, k, op in rows}


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(1)
    x, y = people(rng, 3, 120)
    idx = np.arange(len(y)) % 120
    tr, te, new = idx < 40, (idx >= 40) & (idx < 80), idx >= 80
    return (x[tr], y[tr]), (x[te], y[te]), (x[new], y[new])


def test_a_generator_returning_its_training_recordings_fails(split):
    (xt, yt), (xh, yh), _ = split
    stats = privacy.group_stats(xt, yt, xt, yt, xh, yh, [0, 1, 2])
    assert stats["ratio_p5"] < 0.01 and stats["copies"] == 1.0 and stats["mia"]["auc"] == 1.0
    assert not any(judged(stats).values())


def test_a_generator_returning_new_recordings_passes(split):
    (xt, yt), (xh, yh), (xn, yn) = split
    stats = privacy.group_stats(xn, yn, xt, yt, xh, yh, [0, 1, 2])
    assert all(judged(stats).values()), (judged(stats), stats["ratio_p5"], stats["mia"])


@pytest.mark.slow
def test_evaluate_reports_the_privacy_section(sim, tmp_path):  # noqa: F811
    from training.cli import main

    out = tmp_path / "report"
    assert main(["evaluate", "--pipeline", sim.pipe, "--data", sim.data, "--out", str(out), "--quick",
                 "--no-sweep", "--threads", "1", "--steps", "3"]) == 0
    res = json.loads((out / "report.json").read_text())
    groups = res["privacy"]["groups"]
    assert set(groups) == {"trained", "enrolled"} and res["privacy"]["enrolment"]["k"] == privacy.ENROL_K
    assert groups["enrolled"]["n_training"] == 2 * privacy.ENROL_K and groups["enrolled"]["n_generated"] == 8
    assert groups["trained"]["n_generated"] == res["gan"]["n_generated"]
    names = [t["name"] for t in res["targets"]]
    assert "privacy (trained): membership AUC" in names and "privacy (enrolled): copies" in names
    md = (out / "report.md").read_text()
    assert "## Privacy: distance to the closest record" in md and "figures/privacy.png" in md
    assert (out / "figures" / "privacy.png").stat().st_size > 1000


# ---- generate --min-distance-db ----------------------------------------------------------------------------
GEN = ["--per-user", "2", "--steps", "2", "--batch-size", "4", "--threads", "1"]


def _manifest_paths(out):
    import csv

    with open(out / "manifest.csv") as f:
        return [r["path"] for r in csv.DictReader(f)]


def test_generate_min_distance_drops_copies(tiny_pipeline_dir, tmp_path, capsys):
    """The pipeline's own earlier export as --reference: the same seeds give copies (all dropped), other seeds
    are kept; with a texture bank built from those samples the bank's recordings are the reference."""
    import shutil

    from training.cli import main

    first = tmp_path / "first"
    assert main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(first), "--seed", "3", *GEN]) == 0
    n = len(_manifest_paths(first))
    again = tmp_path / "again"
    assert main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(again), "--seed", "3", *GEN,
                 "--min-distance-db", "0.5", "--reference", str(first)]) == 0
    assert _manifest_paths(again) == [] and len(list((again / ".rejected").rglob("*.npy"))) == n
    rep = json.loads((again / "meta.json").read_text())["generation"]["min_distance_report"]
    assert rep["rejected"] == n and rep["rejection_rate"] == 1.0 and rep["nearest_db_min"] < 0.01
    assert "rejected 6 of 6 samples (100.0%" in capsys.readouterr().out.replace(str(n), "6")
    other = tmp_path / "other"
    assert main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(other), "--seed", "4", *GEN,
                 "--min-distance-db", "0.01", "--reference", str(first)]) == 0
    assert len(_manifest_paths(other)) == n
    assert json.loads((other / "meta.json").read_text())["generation"]["min_distance_report"]["rejected"] == 0
    # no bank and no --reference: refused before anything is generated
    assert main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(tmp_path / "x"), *GEN,
                 "--min-distance-db", "1"]) == 2
    assert "no texture bank" in capsys.readouterr().err  # one line, from the CLI's error boundary
    assert not (tmp_path / "x").exists()
    # a bank of the first export's samples: the pipeline holds those recordings and refuses their copies
    banked = tmp_path / "banked"
    shutil.copytree(tiny_pipeline_dir, banked)
    assert main(["texture", "--pipeline", str(banked), "--data", str(first)]) == 0
    plain = tmp_path / "plain"
    assert main(["generate", "--pipeline", str(banked), "--out", str(plain), "--seed", "3", *GEN,
                 "--no-texture", "--min-distance-db", "0.5"]) == 0
    rep = json.loads((plain / "meta.json").read_text())["generation"]["min_distance_report"]
    assert rep["rejected"] == n and "texture bank" in rep["reference"]


def test_enrolled_banks_draw_as_the_pipelines_bank(tiny_pipeline_dir):
    """The bank's options (source, shift, ...) carry over to the few-shot/enrolled bank of a pipeline."""
    from models.pipeline import DopplerPipeline
    from models.texture import build_bank
    from training.eval.fewshot import FewShotConfig, adapt_new_users

    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    h, w = pipe.image_size
    x = np.random.default_rng(0).uniform(-60, 0, (6, 1, h, w)).astype(np.float32)
    pipe.texture = build_bank(pipe.vae, pipe.normalization, x, pipe.users[:3] * 2, source="own",
                              shift="random")
    assert pipe.texture.config.source == "own"
    pipe_k, _ = adapt_new_users(pipe, x[:4], np.array([0, 0, 1, 1]), ["n0", "n1"],
                                FewShotConfig(steps=1, batch_size=2, time_shifts=1))
    assert pipe_k.texture.options() == pipe.texture.options()
