"""Evaluator: the augmentation protocol's data rules, the population's disjointness, and a tiny end-to-end
run."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from training.eval.augmentation import check_disjoint, run_augmentation, select_k_per_user, summarize_trials
from training.eval.population import population_pipeline


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A tiny simulated dataset (3 users x 12, 32x32) and an untrained tiny pipeline that claims it as
    provenance."""
    from models.pipeline import build_untrained_pipeline
    from training.data.dataset import load_dataset
    from training.data.simulate import SimulateConfig, simulate_dataset

    root = tmp_path_factory.mktemp("eval")
    simulate_dataset(root / "data", SimulateConfig(users=3, per_user=12, size=32, seed=5, preview_per_user=0),
                     progress=False)
    ds = load_dataset(root / "data")
    torch.manual_seed(0)
    prov = dict(fingerprint=ds.fingerprint, meta=ds.meta, simulate=ds.meta["simulate"], users=ds.users)
    build_untrained_pipeline("tiny", ds.users, version="test", dataset=prov).save(root / "pipe")
    pop_prov = dict(fingerprint="population", simulate={"profiles": [{"seed": 900_001}, {"seed": 900_002}]})
    build_untrained_pipeline("tiny", ["p0", "p1"], version="pop", dataset=pop_prov).save(root / "pop")
    return SimpleNamespace(root=root, data=str(root / "data"), pipe=str(root / "pipe"),
                           pop=str(root / "pop"), ds=ds)


# ---- protocol: selections and the "generator sees only its k" rule -----------------------------------------
def test_select_k_per_user_is_exact_deterministic_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    a = select_k_per_user(labels, 3, seed=0)
    assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3] and len(set(a)) == 12
    assert np.array_equal(a, select_k_per_user(labels, 3, seed=0))
    assert not np.array_equal(a, select_k_per_user(labels, 3, seed=1))
    assert set(select_k_per_user(labels, 3, seed=0)) <= set(select_k_per_user(labels, 10, seed=0))
    assert np.array_equal(select_k_per_user(labels, None, seed=0), np.arange(40))
    with pytest.raises(ValueError, match="fewer than k"):
        select_k_per_user(labels, 11, seed=0)


def test_splits_are_disjoint(sim):
    check_disjoint(sim.ds.filter("train").paths, sim.ds.filter("test").paths)
    with pytest.raises(ValueError, match="in both"):
        check_disjoint(["u/1.npy", "u/2.npy"], ["u/2.npy"])


@pytest.mark.parametrize("mix", ["concat", "balanced"])
def test_generator_sees_only_the_classifiers_k(mix):
    n_users, per_user = 3, 8
    labels = np.repeat(np.arange(n_users), per_user)
    # row id
    x = np.arange(len(labels), dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
    paths = [f"u{c}/{i}.npy" for i, c in enumerate(labels)]
    seen, trained = [], []

    def make_generator(k, seed, x_k, y_k):
        seen.append((k, seed, x_k[:, 0, 0, 0].astype(int).tolist(), y_k.tolist()))
        return None, "spy"

    def synthesize(handle, m, seed):
        return np.full((m * n_users, 1, 2, 2), -1.0, np.float32), np.repeat(np.arange(n_users), m)

    def fit_score(xs, ys, seed, steps):
        trained.append((len(xs), steps, xs[:, 0, 0, 0].astype(int).tolist(), ys.tolist()))
        return 0.5

    trials = run_augmentation(x, labels, paths, k_values=(2, None), seeds=(0, 1), m_per_user=4,
                              make_generator=make_generator, synthesize=synthesize, fit_score=fit_score,
                              budget_for=lambda n: 10 * n, mix=mix)
    assert len(trials) == 4 and [t.k for t in trials] == ["2", "2", "all", "all"]
    for (k, seed, rows, ys), t in zip(seen, trials, strict=True):
        expect = select_k_per_user(labels, k, seed)
        # exactly the classifier's k, nothing else
        assert rows == expect.tolist() and ys == labels[expect].tolist()
        assert t.generator_saw == [paths[i] for i in expect] and t.n_real == len(expect)
    # real-only and augmented runs get the same optimiser budget; the budget counts real + synthetic once
    real_rows = select_k_per_user(labels, 2, 0).tolist()
    assert trained[0][:3] == (6, 10 * (6 + 12), real_rows)
    reps = 2 if mix == "balanced" else 1  # m = 4 synthetic vs k = 2 real per user
    assert trained[1][:2] == (6 * reps + 12, 10 * (6 + 12))
    # real, then synthetic
    assert trained[1][2][:6 * reps] == real_rows * reps and trained[1][2][6 * reps:] == [-1] * 12
    assert trained[1][3][:6 * reps] == labels[real_rows].tolist() * reps
    assert trained[5][0] == 24 + 12  # k = all (8 real vs 4 synthetic per user): real is never repeated
    s = summarize_trials(trials)
    assert s["2"]["gain"]["mean"] == 0.0 and s["all"]["n_real"] == 24


def test_run_augmentation_rejects_unknown_mix():
    with pytest.raises(ValueError, match="mix"):
        run_augmentation(np.zeros((2, 1, 2, 2)), np.array([0, 1]), ["a", "b"], k_values=(None,), seeds=(0,),
                         m_per_user=1, make_generator=None, synthesize=None, fit_score=None, budget_for=None,
                         mix="interleave")


def test_population_sharing_a_target_profile_is_refused(sim, tmp_path):
    from models.pipeline import build_untrained_pipeline

    target_seed = sim.ds.meta["simulate"]["profiles"][0]["seed"]
    bad = tmp_path / "bad"
    build_untrained_pipeline(
        "tiny", ["p0"], dataset=dict(fingerprint="x", simulate={"profiles": [{"seed": target_seed}]})
    ).save(bad)
    ctx = SimpleNamespace(out=tmp_path, device="cpu", data=SimpleNamespace(meta=sim.ds.meta, fingerprint="y"),
                          log=print, pipe=SimpleNamespace(route="kl"))
    with pytest.raises(SystemExit, match="disjoint population"):
        population_pipeline(ctx, str(bad), population_seed=1)
    pop, info = population_pipeline(ctx, sim.pop, population_seed=1)
    assert info["shared_profiles"] == [] and info["population_user_seeds"] == [900_001, 900_002]
    ctx.pipe.route = "vq-diffusion"  # a KL population cannot stand in for a VQ-Diffusion generator
    with pytest.raises(SystemExit, match="must be of the evaluated route"):
        population_pipeline(ctx, sim.pop, population_seed=1)


# ---- end to end --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_quick_end_to_end_with_fewshot_and_summary(sim, tmp_path):
    from training.cli import main

    pipe = tmp_path / "pipe"
    shutil.copytree(sim.pipe, pipe)
    out = tmp_path / "report"
    rc = main(["evaluate", "--pipeline", str(pipe), "--data", sim.data, "--out", str(out), "--quick",
               "--fewshot",
               "--population-pipeline", sim.pop, "--threads", "1", "--steps", "3", "--write-summary"])
    assert rc == 0
    res = json.loads((out / "report.json").read_text())
    for key in ("reconstruction", "gan", "fidelity", "physics", "sweep", "augmentation", "targets",
                "runtime_s"):
        assert key in res, key
    assert 0 <= res["gan"]["affinity"] <= 1 and res["fidelity"]["fd_generated_test"] >= 0
    assert 0 <= res["fidelity"]["c2st_vae"]["accuracy"] <= 1
    assert {r["scheduler"] for r in res["sweep"]["rows"]} == {"ddpm", "ddim", "dpmsolver++"}
    trials = {t["k"]: t for t in res["augmentation"]["trials"]}
    n_train = res["data"]["n_train"]
    assert len(trials["3"]["generator_saw"]) == 3 * 3 and len(trials["all"]["generator_saw"]) == n_train
    assert trials["3"]["generator"].startswith("population")
    assert [t["name"] for t in res["targets"]][:4] == [
        "affinity / real-test accuracy", "TSTR / TRTR", "augmentation gain at k=5",
        "two-sample test accuracy"]
    md = (out / "report.md").read_text()
    assert "## Headline metrics against targets" in md and "**Protocol.**" in md
    for fig in ("real_vs_generated", "metrics", "sampler_sweep", "augmentation"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    summary = json.loads((pipe / "dopplergen.json").read_text())["evaluation"]
    assert summary["quick"] is True and summary["data_fingerprint"] == res["data"]["fingerprint"]
    # only when asked
    assert json.loads((Path(sim.pipe) / "dopplergen.json").read_text()).get("evaluation") is None


@pytest.mark.slow
def test_evaluate_quick_with_filters_reports_rejections_and_seed_intervals(sim, tmp_path):
    from training.cli import main

    out = tmp_path / "report"
    rc = main(["evaluate", "--pipeline", sim.pipe, "--data", sim.data, "--out", str(out), "--quick",
               "--fewshot",
               "--population-pipeline", sim.pop, "--threads", "1", "--steps", "3", "--no-sweep", "--seeds",
               "2",
               "--filter", "physics,confidence,diversity", "--filter-factor", "2", "--fewshot-sample-steps",
               "2"])
    assert rc == 0
    aug = json.loads((out / "report.json").read_text())["augmentation"]
    assert json.loads((out / "report.json").read_text())["settings"]["fewshot_sample_steps"] == 2
    assert "sampled with 2 " in aug["protocol"]  # the few-shot generators' own sampler steps, not --steps 3
    assert aug["filter"]["config"] == ["physics", "confidence", "diversity"]
    runs = aug["filter"]["runs"]
    assert len(runs) == len(aug["trials"]) == 4  # k = 3 and all, 2 seeds each
    m = json.loads((out / "report.json").read_text())["settings"]["synth_per_user"]
    # factor x m per user drawn (k = all: as many as its pool holds, 6 per user); m per user kept
    for r in runs:
        assert r["candidates"] == (2 * m if r["n_real"] == 9 else min(2 * m, 6)) * 3 and r["kept"] == m * 3
        assert set(r["per_filter"]) == {"physics", "confidence", "diversity"}
        assert r["physics_reference"] == "the classifier's own k real recordings"
    assert [r["n_real"] for r in runs] == [3 * 3, 3 * 3, aug["trials"][2]["n_real"],
                                           aug["trials"][3]["n_real"]]
    for k in ("3", "all"):
        ci = aug["summary"][k]["gain_ci95"]
        gains = [t["gain"] for t in aug["trials"] if t["k"] == k]
        assert ci["n"] == 2 and ci["mean"] == pytest.approx(np.mean(gains))
        assert ci["lo"] <= ci["mean"] <= ci["hi"]
    md = (out / "report.md").read_text()
    assert "gain, 95% CI" in md and "Synthetic samples are filtered (physics, confidence, diversity)" in md


def test_fewshot_sample_steps_apply_to_dpmsolver_only_and_never_exceed_steps():
    from types import SimpleNamespace

    from training.eval.augmentation import fewshot_steps_for
    from training.eval.evaluate import EvalSettings

    pop = SimpleNamespace(route="kl")
    ctx = lambda sched, steps, n=10: SimpleNamespace(st=EvalSettings(fewshot_sample_steps=n), sampler=sched,  # noqa: E731
                                                       steps=steps)
    assert fewshot_steps_for(ctx("dpmsolver++", 20), pop) == 10
    assert fewshot_steps_for(ctx("dpmsolver++", 5), pop) == 5  # a smaller --steps wins
    assert fewshot_steps_for(ctx("dpmsolver++", 20, n=0), pop) is None  # 0 = the evaluator's steps
    assert fewshot_steps_for(ctx("ddpm", 1000), pop) is None  # 10 DDPM steps would be noise
    assert fewshot_steps_for(ctx("ddim", 50), pop) is None
    assert fewshot_steps_for(ctx("vq-diffusion", 100), SimpleNamespace(route="vq-diffusion")) is None


@pytest.mark.slow
def test_trials_in_worker_processes_match_trials_in_this_process(sim, tmp_path):
    """The same draws and the same thread count give the same trials, whether they run here or in spawned
    workers."""
    from training.cli import main

    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        rc = main(["evaluate", "--pipeline", sim.pipe, "--data", sim.data, "--out", str(out), "--quick",
                   "--fewshot",
                   "--population-pipeline", sim.pop, "--threads", "1", "--steps", "3", "--no-sweep",
                   "--seeds", "2",
                   "--filter", "physics", "--workers", str(workers)])
        assert rc == 0
        runs[workers] = json.loads((out / "report.json").read_text())["augmentation"]
    one, two = runs[1], runs[2]
    assert one["workers"] == {"processes": 1, "threads_each": None}
    assert two["workers"] == {"processes": 2, "threads_each": 1}
    assert "2 worker processes of 1 torch thread(s) each" in two["protocol"]
    assert [(t["k"], t["seed"]) for t in two["trials"]] == [("3", 0), ("3", 1), ("all", 0), ("all", 1)]
    assert two["trials"] == one["trials"]  # accuracies, what each generator saw: identical
    assert two["fewshot_logs"] == one["fewshot_logs"] and len(two["fewshot_logs"]) == 2
    assert two["filter"]["runs"] == one["filter"]["runs"] and len(two["filter"]["runs"]) == 4
    assert "trials in 2 worker processes" in (tmp_path / "w2" / "evaluate.log").read_text()


class _FailingRunner:  # module level, so spawned workers can unpickle it
    ctx = SimpleNamespace(threads=2)

    def for_worker(self, threads):
        return self

    def __call__(self, k, seed):
        if seed == 1:
            raise ValueError(f"trial k={k} seed={seed} failed")
        return None, None, [], [f"k={k} seed={seed} ok"]


def test_a_failing_trial_in_a_worker_stops_the_section():
    from training.eval.trials import plan_workers, run_trials

    assert (plan_workers(2, 3, 2) == (2, 1) and plan_workers(4, 1, 8) == (1, None)
            and plan_workers(0, 5, 2) == (1, None))
    lines = []
    with pytest.raises(ValueError, match="seed=1 failed"):
        run_trials(_FailingRunner(), [(3, 0), (3, 1), (3, 2), (3, 3)], 2, lines.append)
    assert lines[0].startswith("augmentation: 4 trials in 2 worker processes")
    with pytest.raises(ValueError, match="seed=1 failed"):  # and in this process
        run_trials(_FailingRunner(), [(3, 0), (3, 1)], 1, lines.append)
