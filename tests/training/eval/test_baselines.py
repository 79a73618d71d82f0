"""`evaluate --baselines`: classic augmentation, the ACGAN (shapes, training), kinematic sifting and the
section on the tiny preset."""

import json
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training.eval import acgan, classic_aug, report
from training.eval.baselines import (
    CLASSIC_ARMS,
    GAN_ARMS,
    OURS_ARMS,
    QUICK_BASELINES,
    SiftError,
    baselines_section,
    sift,
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Targets (3 users x 12, 32x32) with an untrained tiny pipeline, and a disjoint simulated population with
    a tiny population pipeline that names it as its training data."""
    from models.pipeline import build_untrained_pipeline
    from training.data.dataset import load_dataset
    from training.data.simulate import SimulateConfig, simulate_dataset

    root = tmp_path_factory.mktemp("baselines")
    simulate_dataset(root / "data", SimulateConfig(users=3, per_user=12, size=32, seed=5, preview_per_user=0),
                     progress=False)
    simulate_dataset(root / "popdata", SimulateConfig(users=3, per_user=10, size=32, seed=6,
                                                      preview_per_user=0), progress=False)
    ds, pop = load_dataset(root / "data"), load_dataset(root / "popdata")
    torch.manual_seed(0)
    build_untrained_pipeline("tiny", ds.users, version="test",
                             dataset=dict(fingerprint=ds.fingerprint, meta=ds.meta, users=ds.users,
                                          simulate=ds.meta["simulate"])).save(root / "pipe")
    build_untrained_pipeline("tiny", pop.users, version="pop",
                             dataset=dict(fingerprint=pop.fingerprint, path=str(root / "popdata"),
                                          simulate=pop.meta["simulate"])).save(root / "pop")
    return SimpleNamespace(root=root, data=str(root / "data"), pipe=str(root / "pipe"), pop=str(root / "pop"),
                           ds=ds)


# ---- (b) classic augmentation ------------------------------------------------------------------------------
def test_classic_transforms_alone_and_combined():
    rng = np.random.default_rng(0)
    x = rng.uniform(-60, 0, (6, 1, 16, 20)).astype(np.float32)
    y = np.repeat([0, 1], 3)
    for name in (*classic_aug.TRANSFORMS, "all"):
        cfg = classic_aug.ClassicConfig().only(name)
        xa, ya = classic_aug.augment(x, y, 4, cfg, seed=1, dyn_range_db=60.0)
        assert xa.shape == (8, 1, 16, 20) and ya.tolist() == [0] * 4 + [1] * 4, name
        assert xa.min() >= -60 and xa.max() <= 0, name
        assert not np.allclose(xa[:3], x[:3]), name  # every transform changes its input
        assert np.array_equal(xa, classic_aug.augment(x, y, 4, cfg, seed=1, dyn_range_db=60.0)[0]), name
    # a time mask sets whole columns (all Doppler bins at some time frames) to the spectrogram's mean
    cfg = replace(classic_aug.ClassicConfig(), transforms=("time_mask",), time_mask=0.5, n_masks=1)
    xa, _ = classic_aug.augment(x, y, 3, cfg, seed=3, dyn_range_db=60.0)
    # 3 per person from its 3 recordings: copy i starts from recording i
    masked = np.all(np.isclose(xa[:, 0], x[:, 0].mean(axis=(1, 2))[:, None, None]), axis=1)  # (N, T)
    assert masked.any() and masked.sum(axis=1).max() <= 10
    assert np.array_equal(xa[:, 0].transpose(0, 2, 1)[~masked], x[:, 0].transpose(0, 2, 1)[~masked])
    with pytest.raises(ValueError, match="unknown transform"):
        classic_aug.ClassicConfig(transforms=("pitch",))


def test_classic_tuning_picks_the_best_scored_strength_per_transform():
    x = np.random.default_rng(0).uniform(-60, 0, (4, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 0, 1, 1])
    seen = []

    def score(xs, ys, seed, n_total):  # prefers noisier data: the 6 dB noise should win
        seen.append(n_total)
        return float(np.std(xs))

    out = classic_aug.tune(x, y, 3, score, 60.0, grid={"noise": (1.0, 6.0)})
    assert out["tuned"].noise == 6.0 and [r["value"] for r in out["scores"]] == [1.0, 6.0]
    assert set(seen) == {4 + 3 * 2}  # the budget of k real + m per person, as the protocol's


# ---- (c) the ACGAN -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,stages", [((64, 64), 4), ((32, 32), 3), ((64, 128), 4), ((16, 16), 2)])
def test_acgan_generator_and_discriminator_shapes(size, stages):
    assert acgan.plan(size)[0] == stages
    g = acgan.Generator(7, size, channels=1, nz=16, width=4)
    d = acgan.Discriminator(7, size, channels=1, width=4)
    x = g(torch.randn(5, 16), torch.arange(5))
    assert x.shape == (5, 1, *size) and x.abs().max() <= 1
    adv, aux = d(x)
    assert adv.shape == (5,) and aux.shape == (5, 7)
    with pytest.raises(ValueError, match="too small"):
        acgan.plan((6, 6))


def test_acgan_trains_and_new_classes_start_at_the_population_mean():
    cfg = acgan.GanConfig(width=4, nz=8, batch_size=4)
    gan = acgan.build(5, (32, 32), 1, cfg)
    x = np.random.default_rng(0).uniform(-1, 1, (12, 1, 32, 32)).astype(np.float32)
    before = {k: v.clone() for k, v in gan.g.state_dict().items()}
    log = acgan.train(gan, x, np.arange(12) % 3, 2, cfg, seed=0)
    assert log["steps"] == 2 and np.isfinite(log["loss_d_last"]) and gan.seconds > 0
    assert any(not torch.equal(before[k], v) for k, v in gan.g.state_dict().items())
    acgan.init_classes_at_mean(gan, np.array([3, 4]), np.arange(3))
    w = gan.g.embed.weight.detach()
    assert torch.allclose(w[3], w[:3].mean(0)) and torch.allclose(w[4], w[:3].mean(0))
    s = acgan.sample(gan, np.array([3, 4, 4]), seed=1)
    assert s.shape == (3, 1, 32, 32) and np.array_equal(s, acgan.sample(gan, np.array([3, 4, 4]), seed=1))
    again = acgan.build(5, (32, 32), 1, cfg, gan.state())  # a worker rebuilds it from the state
    assert torch.equal(again.g.embed.weight, gan.g.embed.weight)


def test_a_sifting_threshold_that_rejects_everything_is_a_clear_error(sim):
    ds = sim.ds.filter("train")
    x, y = ds.x, np.asarray(ds.labels)
    ref = np.concatenate([np.flatnonzero(y == u)[:3] for u in range(3)])
    idx, info = sift(x, y, x[ref], y[ref], 2, 3, ds.meta, QUICK_BASELINES)
    assert len(idx) == 6 and 0 <= info["rejection_rate"] <= 1
    with pytest.raises(SiftError, match="rejected all .* admits nothing"):
        rest = np.setdiff1d(np.arange(len(y)), ref)  # candidates other than the references themselves
        sift(x[rest], y[rest], x[ref], y[ref], 2, 3, ds.meta, replace(QUICK_BASELINES, sift_z=1e-6))


# ---- the section -------------------------------------------------------------------------------------------
def _ctx(sim, tmp_path):
    from models.pipeline import DopplerPipeline
    from training.eval.context import Context, Log, Pool, load_data
    from training.eval.evaluate import QUICK

    pipe = DopplerPipeline.load(sim.pipe)
    log = Log(tmp_path / "evaluate.log")
    data = load_data(sim.data, pipe, log)
    ctx = Context(pipe=pipe, data=data, st=QUICK, steps=3, guidance=2.0, sampler="dpmsolver++", seed=0,
                  device="cpu", out=tmp_path, log=log, threads=1)
    return ctx, Pool(np.zeros((0, 1, 32, 32), np.float32), np.zeros(0, np.int64), [])


def test_each_baseline_runs_on_the_tiny_preset(sim, tmp_path):
    from training.eval import baselines_report

    ctx, pool = _ctx(sim, tmp_path)
    res = baselines_section(ctx, pool, {"population": {"path": sim.pop}}, workers=1)
    assert res["arms"] == [*CLASSIC_ARMS, *GAN_ARMS, *OURS_ARMS]
    assert res["population"]["path"].endswith("popdata") and res["population"]["users"] == 3
    (t,) = res["trials"]  # QUICK: k = 3, one seed
    assert t["k"] == "3" and len(t["generator_saw"]) == 9 and not set(t["generator_saw"]) & set(
        ctx.data.test_paths)
    assert set(t["arms"]) == set(res["arms"]) and all(0 <= a["acc"] <= 1 for a in t["arms"].values())
    assert 0 <= t["arms"]["acgan+sift"]["rejection_rate"] <= 1
    # the sifted arm reuses the raw arm's fine-tuned GAN and is charged for it, as ours + classic for ours
    assert t["arms"]["acgan+sift"]["seconds"] >= t["arms"]["acgan+sift"]["finetune_seconds"] > 0
    assert t["arms"]["ours+classic"]["seconds"] >= t["arms"]["ours"]["seconds"] * 0.9
    s = res["summary"]["3"]
    assert s["best_alternative"] in ["real", *CLASSIC_ARMS, *GAN_ARMS]
    assert set(s["versus_best"]) == set(OURS_ARMS) and s["versus_best"]["ours"]["n"] == 1
    assert res["gan"]["pretrain"]["steps"] == QUICK_BASELINES.gan.pretrain_steps
    md = "\n".join(baselines_report.markdown(json.loads(json.dumps(res, default=float))))
    assert "## Versus the alternatives" in md and "(c) ACGAN + kinematic sifting" in md
    assert "minus the best alternative" in md and "rejected" in md
    for fig in ("baselines.png", "baselines_samples.png"):
        assert (tmp_path / "figures" / fig).stat().st_size > 1000


def test_without_a_population_pipeline_ours_is_not_measured_and_the_population_is_simulated(sim, tmp_path):
    from training.eval import baselines_report

    ctx, pool = _ctx(sim, tmp_path)
    with pytest.raises(SystemExit, match="own seed"):
        baselines_section(ctx, pool, None, population_seed=5)
    res = baselines_section(ctx, pool, None, population_seed=9,
                            cfg=replace(QUICK_BASELINES, classic_alone=False))
    assert res["arms"] == ["classic:all", *GAN_ARMS] and res["ours"]["measured"] is False
    assert res["population"]["path"] == str(tmp_path / "population" / "data")
    assert "not measured" in "\n".join(baselines_report.markdown(json.loads(json.dumps(res, default=float))))


@pytest.mark.slow
def test_evaluate_baselines_adds_the_section_to_the_report(sim, tmp_path):
    from training.cli import main

    out = tmp_path / "report"
    rc = main(["evaluate", "--pipeline", sim.pipe, "--data", sim.data, "--out", str(out), "--quick",
               "--fewshot", "--population-pipeline", sim.pop, "--threads", "1", "--workers", "1", "--steps",
               "3", "--no-sweep", "--baselines"])
    assert rc == 0
    res = json.loads((out / "report.json").read_text())
    b = res["baselines"]
    assert b["ours"]["measured"] and set(b["summary"]) == {"3"} and b["arms"][-2:] == list(OURS_ARMS)
    # same k selection and seed as the augmentation section: ours' trial saw the same recordings
    aug = next(t for t in res["augmentation"]["trials"] if t["k"] == "3")
    assert b["trials"][0]["generator_saw"] == aug["generator_saw"]
    md = (out / "report.md").read_text()
    assert md.index("## Augmentation gain") < md.index("## Versus the alternatives") < md.index("## Sampler")
    assert (out / "figures" / "baselines.png").is_file()


@pytest.mark.slow
def test_evaluate_with_data_and_targets_reports_the_new_people_beside_the_alternatives(sim, tmp_path,
                                                                                       monkeypatch):
    """`evaluate --data D --fewshot --targets T --baselines`: the whole report of D, plus the few-shot
    protocol on T's people with the alternatives beside it. The "ours" arm takes the few-shot trial's
    enrolment, samples and fits instead of repeating them, and is charged the seconds they took."""
    import time

    from training.cli import main
    from training.eval import fewshot

    calls, enrol = [], fewshot.adapt_new_users

    def slow_enrol(pipe, x_k, *a, **kw):  # 0.3 s that the "ours" arm must be charged for
        calls.append(x_k.tobytes())
        time.sleep(0.3)
        return enrol(pipe, x_k, *a, **kw)

    monkeypatch.setattr(fewshot, "adapt_new_users", slow_enrol)
    out = tmp_path / "report"
    rc = main(["evaluate", "--pipeline", sim.pop, "--data", str(sim.root / "popdata"), "--fewshot",
               "--targets", sim.data, "--baselines", "--quick", "--out", str(out), "--threads", "1",
               "--workers", "1", "--steps", "3", "--no-sweep", "--no-activities",
               "--ood-targets", str(sim.root / "popdata"), "--adapted", sim.pop])
    assert rc == 0
    res = json.loads((out / "report.json").read_text())
    # --adapted goes with --ood-targets: another domain's section, as given and adapted, no alternatives
    assert set(res["ood"]["runs"]) == {"as given"}
    assert set(res["ood_other"]["runs"]) == {"as given", "adapted"}
    assert not any(r.get("baselines") for r in res["ood_other"]["runs"].values())
    assert {t["k"] for t in res["augmentation"]["trials"]} == {"all"}  # no population protocol: T's instead
    run = res["ood"]["runs"]["as given"]
    (trial,), (rec,) = run["trials"], run["baselines"]["trials"]
    # privacy's enrolment, the targets' trial, and the same k of --ood-targets from both of its pipelines;
    # the baselines' ours arm would make the targets' count 2
    assert sorted(Counter(calls).values()) == [1, 1, 2], "the baselines' ours arm enrolled the k again"
    assert rec["generator_saw"] == trial["generator_saw"] and rec["acc_real"] == trial["acc_real"]
    assert rec["arms"]["ours"]["acc"] == trial["acc_augmented"] and rec["arms"]["ours"]["seconds"] >= 0.3
    md = (out / "report.md").read_text()
    assert (md.index("## Augmentation gain") < md.index("## Few-shot on people the pipeline never saw")
            < md.index("## Versus the alternatives") < md.index("## Sampler"))
    assert "(figures/baselines.png)" in md and (out / "figures" / "baselines.png").is_file()
    assert f"| 3 | on people the pipeline never saw instead (`--targets {sim.data}`" in md
    other = md.index("## Out of domain: another radar's people")
    assert md.index("## Versus the alternatives") < other < md.index("## Sampler")
    assert "- adapted, k = 3: gain" in md[other:]
    assert not any(t["name"].startswith("out-of-domain gain at k=5") for t in res["targets"])  # k = 3 here
    res["ood_other"]["runs"]["adapted"]["summary"]["5"] = {"gain": {"mean": 0.02}}
    (row,) = [t for t in report.targets(res, report.TARGETS) if t["name"].startswith("out-of-domain")]
    assert row["name"] == f"out-of-domain gain at k=5, adapted (people of {sim.root / 'popdata'})"
    assert row["pass"] is False and row["margin"] == "-3.0 points"


def test_few_shot_samples_start_from_their_own_persons_recordings_in_turn():
    from training.eval.trials import starts

    x_k = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
    y_k = np.array([0, 1, 0, 1, 1])
    got = starts(x_k, y_k, np.array([0, 0, 0, 1, 1, 1, 1]))[:, 0, 0, 0]
    assert got.tolist() == [0, 2, 0, 1, 3, 4, 1]
    with pytest.raises(ValueError, match="none of the k"):
        starts(x_k, y_k, np.array([2]))
