"""`dopplergen adapt`, the domain check, the leave-one-out utility check, `evaluate --fewshot --targets`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models import domain
from models.pipeline import DopplerPipeline
from training.cli import main as cli
from training.data.dataset import Record, write_dataset
from training.data.radar import simulate_walk
from training.data.users import make_user, recording_kwargs

DEMO = Path(__file__).resolve().parents[2] / "checkpoints" / "demo"
# another radar's rendering of the simulator's walkers (experiments/other_radar.py)
OTHER = dict(carrier_hz=5.8e9, velocity_span_mps=(-5.0, 5.0), dyn_range_db=50.0, duration_s=2.5,
             snr_db=12.0, clutter_db=5.0)


def walks(people: int, per: int, size: int, other: bool, seed0: int = 7_000_000) -> list[tuple[str, int,
                                                                                               Any]]:
    out = []
    for i in range(people):
        prof = make_user(seed0 + i, f"p{i}")
        for n in range(per):
            kw = recording_kwargs(prof, n)
            if other:
                kw.update({k: v for k, v in OTHER.items() if k in ("snr_db", "clutter_db")})
            radar = {k: v for k, v in OTHER.items() if k not in ("snr_db", "clutter_db")} if other else {}
            out.append((prof.user_id, n, simulate_walk(**kw, size=size, **radar).db))
    return out


def write_set(path: Path, people: int, per: int, size: int, other: bool, test_from: int) -> Path:
    recs = [Record(u, f"r{n:02d}", db, "test" if n >= test_from else "train", {"group": f"s{n // 3}"})
            for u, n, db in walks(people, per, size, other)]
    write_dataset(path, recs, {"image_size": [size, size], "channels": 1, "dyn_range_db": 60.0})
    return path


def test_lora_merge_gives_the_adapted_unets_output(tiny_pipeline_dir):
    """Merged adapters are the same function as the adapters: what is exported is what was trained."""
    from training.stages.adapt_steps import add_lora, merge_lora

    torch.manual_seed(0)
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    unet = pipe.unet
    params = add_lora(unet, rank=4, conv=True)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)  # lora_B starts at zero: make the adapters do something
    x = torch.randn(2, unet.config.in_channels, 8, 8)
    t = torch.tensor([10, 500])
    ctx = pipe.encode_context(torch.tensor([0, 1]))
    with torch.no_grad():
        adapted = unet(x, t, encoder_hidden_states=ctx).sample
        merge_lora(unet)
        merged = unet(x, t, encoder_hidden_states=ctx).sample
    assert not any("lora" in n for n, _ in unet.named_parameters())
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-4)


def test_adapt_writes_a_normal_pipeline_with_the_new_people(tiny_pipeline_dir, tmp_path, capsys):
    data = write_set(tmp_path / "theirs", people=2, per=6, size=32, other=True, test_from=5)
    out = tmp_path / "adapted"
    rc = cli(["adapt", "--pipeline", tiny_pipeline_dir, "--data", str(data), "--out", str(out),
              "--vae-steps", "2", "--unet-steps", "2", "--prior-per-user", "1", "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    src, pipe = DopplerPipeline.load(tiny_pipeline_dir), DopplerPipeline.load(out)
    assert pipe.users == src.users + ["p0", "p1"]
    # the pipeline's own rows are copied bit for bit; the new ones were learnt
    w0, w1 = src.user_encoder.embedding.weight, pipe.user_encoder.embedding.weight
    assert torch.equal(w1[:len(src.users)], w0[:len(src.users)]) and torch.equal(w1[-1], w0[-1])
    meta = json.loads((out / "dopplergen.json").read_text())
    assert meta["adapt"]["users_added"] == ["p0", "p1"] and meta["domain"]["heldout_recon_error_db"] > 0
    assert (tmp_path / "adapted-run" / "loss.png").is_file()
    from models.sampling import sample

    x = sample(pipe, [pipe.user_encoder.index_of("p1")], [0], num_inference_steps=2)
    assert x.shape == (1, 1, 32, 32) and bool(torch.isfinite(x).all())
    # the same names again are refused, and so is a non-empty --out
    rc = cli(["adapt", "--pipeline", str(out), "--data", str(data), "--out", str(tmp_path / "again"),
              "--vae-steps", "1", "--unet-steps", "1"])
    assert rc == 2 and "already in" in capsys.readouterr().err
    rc = cli(["adapt", "--pipeline", tiny_pipeline_dir, "--data", str(data), "--out", str(out)])
    assert rc == 2 and "not empty" in capsys.readouterr().err


def test_domain_check_tells_another_radar_from_the_demos_own():
    pipe = DopplerPipeline.load(DEMO)
    own = np.stack([db for _, _, db in walks(2, 4, 64, other=False)])[:, None]
    other = np.stack([db for _, _, db in walks(2, 4, 64, other=True)])[:, None]
    a, b = domain.check(pipe, own), domain.check(pipe, other)
    assert a.reference_db == pytest.approx(2.16, abs=0.01)  # the activity demo's held-out walks
    assert not a.out_of_domain and a.ratio < 1.2, a
    assert b.out_of_domain and "dopplergen adapt" in b.line(), b


def test_utility_check_sees_helpful_and_harmful_synthetic_data():
    from training.eval.utility import loo_utility

    sets = walks(3, 8, 32, other=False)
    x = np.stack([db for _, _, db in sets])[:, None]
    y = np.repeat(np.arange(3), 8)
    real = np.concatenate([np.flatnonzero(y == p)[:3] for p in range(3)])
    more = np.setdiff1d(np.arange(len(y)), real)  # other real recordings of the same people: helpful
    kw = dict(dyn_range_db=60.0, ratios=(2.0,), max_folds=3, min_steps=60)
    good = loo_utility(x[real], y[real], x[more], y[more], **kw)
    bad = loo_utility(x[real], y[real], x[more], (y[more] + 1) % 3, **kw)  # every label wrong: harmful
    assert good.gains[2.0]["mean"] > bad.gains[2.0]["mean"]
    assert bad.gains[2.0]["mean"] < 0 and bad.best() == (0.0, 0.0)


@pytest.mark.slow
def test_generate_check_with_prints_an_estimate_and_obeys_it(tiny_pipeline_dir, tmp_path, capsys):
    real = tmp_path / "mine"
    for u, n, db in walks(2, 3, 32, other=False):
        name = {"p0": "alice", "p1": "bob"}[u]
        (real / name).mkdir(parents=True, exist_ok=True)
        np.save(real / name / f"{n}.npy", db.astype(np.float32))
    out = tmp_path / "gen"
    rc = cli(["generate", "--pipeline", tiny_pipeline_dir, "--users", "alice,bob", "--per-user", "4",
              "--steps", "2", "--out", str(out), "--check-with", str(real)])
    cap = capsys.readouterr()
    assert "check: leave-one-out" in cap.out and "recommended" in cap.out
    estimate = float(cap.out.split("<- requested")[0].rsplit(":", 1)[1].split("points")[0])
    assert (rc == 2 and estimate < 0 and not out.exists()) or (rc == 0 and estimate >= 0 and out.is_dir())
    rc = cli(["generate", "--pipeline", tiny_pipeline_dir, "--users", "alice", "--per-user", "2",
              "--out", str(tmp_path / "g2"), "--check-with", str(real / "alice")])
    assert rc == 2 and "at least two people" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_fewshot_targets_runs_both_pipelines_side_by_side(tiny_pipeline_dir, tmp_path):
    targets = write_set(tmp_path / "targets", people=3, per=6, size=32, other=True, test_from=3)
    out = tmp_path / "report"
    rc = cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--fewshot", "--targets", str(targets),
              "--adapted", tiny_pipeline_dir, "--quick", "--out", str(out), "--steps", "2", "--threads", "1"])
    assert rc == 0
    res = json.loads((out / "ood.json").read_text())
    assert set(res["runs"]) == {"as given", "adapted"}
    for run in res["runs"].values():
        (t,) = run["trials"]
        assert t["k"] == "3" and t["n_real"] == 9
        assert all("/r0" in p and int(p.split("/r")[1][:2]) < 3 for p in t["generator_saw"])
    assert "Few-shot on people the pipeline never saw" in (out / "ood.md").read_text()
    assert cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--targets", str(targets),
                "--out", str(out)]) == 2
    # --ood-targets is a section of the whole report: it needs --data (and --fewshot)
    assert cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--fewshot", "--ood-targets", str(targets),
                "--out", str(out)]) == 2


def test_evaluate_fewshot_init_strength_starts_the_samples_from_the_k(tiny_pipeline_dir, tmp_path,
                                                                     monkeypatch):
    """`--init-strength 0.5`: each few-shot sample starts from one of its person's k recordings (and only
    those), and the section says so."""
    from training.eval.context import Context

    targets = write_set(tmp_path / "targets", people=3, per=6, size=32, other=True, test_from=3)
    seen, real_sample = [], Context.sample

    def spy(self, *a, init_db=None, strength=1.0, **kw):
        seen.append((None if init_db is None else init_db.copy(), strength))
        return real_sample(self, *a, init_db=init_db, strength=strength, **kw)

    monkeypatch.setattr(Context, "sample", spy)
    out = tmp_path / "report"
    assert cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--fewshot", "--targets", str(targets),
                "--init-strength", "0.5", "--quick", "--out", str(out), "--steps", "2",
                "--threads", "1"]) == 0
    (init, strength), = seen
    res = json.loads((out / "ood.json").read_text())
    (t,) = res["runs"]["as given"]["trials"]
    from training.data.dataset import load_dataset

    ds = load_dataset(targets, channels=1, size=(32, 32))
    k_rows = {ds.x[i].tobytes() for i, p in enumerate(ds.paths) if p in set(t["generator_saw"])}
    assert strength == 0.5 and len(init) and {x.tobytes() for x in init} <= k_rows
    assert res["settings"]["init_strength"] == 0.5 and "noised to 0.5" in (out / "ood.md").read_text()
    with pytest.raises(SystemExit, match="2"):
        cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--fewshot", "--targets", str(targets),
             "--init-strength", "0", "--out", str(out)])


def test_evaluate_targets_runs_the_k_values_asked_for(tiny_pipeline_dir, tmp_path):
    targets = write_set(tmp_path / "targets", people=3, per=6, size=32, other=True, test_from=3)
    out = tmp_path / "report"
    assert cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--fewshot", "--targets", str(targets),
                "--k", "1,2", "--quick", "--out", str(out), "--steps", "2", "--threads", "1"]) == 0
    res = json.loads((out / "ood.json").read_text())
    assert [t["k"] for t in res["runs"]["as given"]["trials"]] == ["1", "2"]
    assert set(res["runs"]["as given"]["summary"]) == {"1", "2"}
    with pytest.raises(SystemExit, match="2"):
        cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--fewshot", "--targets", str(targets),
             "--k", "0,5", "--out", str(out)])


@pytest.mark.slow
def test_evaluate_targets_baselines_puts_enrolment_next_to_the_alternatives(tiny_pipeline_dir, tmp_path):
    """`--fewshot --targets T --baselines`: ours = the pipeline + enrolment on the targets' k, the same k and
    seed as the few-shot trials (its gain reproduces theirs), beside classic augmentation and the ACGAN."""
    targets = write_set(tmp_path / "targets", people=3, per=6, size=32, other=True, test_from=3)
    out = tmp_path / "report"
    rc = cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--fewshot", "--targets", str(targets),
              "--baselines", "--quick", "--out", str(out), "--steps", "2", "--threads", "1"])
    assert rc == 0
    run = json.loads((out / "ood.json").read_text())["runs"]["as given"]
    b = run["baselines"]
    assert b["ours"]["measured"] and "dopplergen enroll" in b["ours"]["how"]
    assert {"ours", "acgan", "classic:all"} <= set(b["arms"])
    (trial,), (rec,) = run["trials"], b["trials"]
    assert rec["generator_saw"] == trial["generator_saw"] and rec["acc_real"] == trial["acc_real"]
    assert rec["arms"]["ours"]["acc"] == trial["acc_augmented"]
    md = (out / "ood.md").read_text()
    assert "## Versus the alternatives" in md and "as `dopplergen enroll` does" in md


def test_import_and_enroll_report_the_domain_check(tmp_path, capsys):
    src = write_set(tmp_path / "theirs", people=1, per=4, size=64, other=True, test_from=4)
    rc = cli(["import", str(src), "--out", str(tmp_path / "imp"), "--size", "64", "--group", "(.*)",
              "--val-fraction", "0", "--test-fraction", "0.25", "--pipeline", str(DEMO)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "warning: against" in cap.err and "dopplergen adapt" in cap.err
    rc = cli(["enroll", "--pipeline", str(DEMO), "--user", "zed", "--data", str(src / "p0"), "--steps", "1",
              "--out", str(tmp_path / "enrolled")])
    cap = capsys.readouterr()
    assert rc == 0 and "enroll: warning:" in cap.err and "dopplergen adapt" in cap.err
    meta = json.loads((tmp_path / "enrolled" / "dopplergen.json").read_text())
    assert meta["enrolled_users"]["zed"]["domain"]["out_of_domain"] is True


@pytest.mark.slow
def test_adapt_of_a_conditioned_pipeline_trains_and_records_the_new_peoples_conditions(tmp_path):
    """The demo conditions on speed and aspect: the data's speed column is used (and its per-person
    distribution recorded); aspect, which the data lacks, is drawn as sampling will draw it."""
    recs = [Record(u, f"r{n:02d}", db, "train" if n < 3 else "val", {"speed_mps": 1.0 + 0.1 * n})
            for u, n, db in walks(2, 4, 64, other=True)]
    data = write_dataset(tmp_path / "theirs", recs, {"image_size": [64, 64], "channels": 1,
                                                     "dyn_range_db": 60.0})
    out = tmp_path / "adapted"
    assert cli(["adapt", "--pipeline", str(DEMO), "--data", str(data), "--out", str(out), "--vae-steps", "1",
                "--unet-steps", "2", "--prior-per-user", "0", "--batch-size", "4"]) == 0
    meta = json.loads((out / "dopplergen.json").read_text())
    speed = meta["conditions"]["speed_mps"]["per_user"]
    assert speed["p0"]["n"] == 3 and "p0" not in meta["conditions"]["aspect_deg"].get("per_user", {})
    assert "user00" in speed  # the pipeline's own people keep theirs


def test_refused_inputs_leave_no_folder_behind(tiny_pipeline_dir, tmp_path, capsys):
    """A typo in --data is one line naming the flag, and neither adapt nor evaluate leaves a folder."""
    missing = str(tmp_path / "nope")
    assert cli(["adapt", "--pipeline", tiny_pipeline_dir, "--data", missing, "--out",
                str(tmp_path / "a")]) == 2
    assert f"--data {missing}: not a directory" in capsys.readouterr().err
    assert cli(["evaluate", "--pipeline", tiny_pipeline_dir, "--data", missing, "--out",
                str(tmp_path / "r")]) == 2
    assert f"--data {missing}: not a directory" in capsys.readouterr().err
    assert cli(["enroll", "--pipeline", tiny_pipeline_dir, "--user", "zed", "--data", missing, "--out",
                str(tmp_path / "e")]) == 2
    assert f"--data {missing}: not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
