"""`dopplergen compare` end to end at the smallest setting: trains all three routes, evaluates, reports."""

from __future__ import annotations

import json

import pytest

from training.compare_report import METRICS, fewest_steps, verdicts


def test_verdicts_pick_the_better_direction_and_report_ties():
    rows = [dict(route="kl", fd=2.0, c2st=0.9, affinity_ratio=0.95),
            dict(route="vq-latent", fd=1.0, c2st=0.905, affinity_ratio=0.80),
            dict(route="vq-diffusion", fd=3.0, c2st=0.99, affinity_ratio=0.951)]
    by_key = {v["key"]: v for v in verdicts(rows)}
    assert by_key["fd"]["best"] == "vq-latent"  # lower is better
    assert (by_key["affinity_ratio"]["best"] is None
            and set(by_key["affinity_ratio"]["tied"]) == {"kl", "vq-diffusion"})
    assert by_key["c2st"]["best"] is None and set(by_key["c2st"]["tied"]) == {"kl", "vq-latent"}
    assert {m[0] for m in METRICS} >= {"psnr_db", "tstr_ratio", "gain_all", "physics_max",
                                       "s_per_sample", "size_mb"}


def test_fewest_steps_keeps_quality_relative_to_the_default():
    def row(steps, aff, fd):
        return dict(kind="sampler", scheduler="dpmsolver++", steps=steps, affinity=aff, fd=fd)

    res = dict(settings=dict(steps=20, scheduler="dpmsolver++"),
               sweep=dict(rows=[row(20, 0.90, 10.0), row(10, 0.89, 11.0), row(5, 0.80, 11.0),
                                row(50, 0.91, 9.0)]))
    assert fewest_steps(res) == 10
    res["sweep"]["rows"][1]["fd"] = 12.0  # +20%: no longer equal quality
    assert fewest_steps(res) == 20


@pytest.mark.slow
def test_compare_runs_end_to_end_at_the_smallest_setting(tmp_path):
    from training.cli import main
    from training.data.simulate import SimulateConfig, simulate_dataset

    data = tmp_path / "data"
    simulate_dataset(data, SimulateConfig(users=3, per_user=8, size=32, seed=5, preview_per_user=0),
                     progress=False)
    out, md = tmp_path / "cmp", tmp_path / "docs" / "compare.md"
    rc = main(["compare", "--data", str(data), "--out", str(out), "--preset", "tiny", "--vae-steps", "2",
               "--stage2-steps", "2", "--train-args", "--batch-size 4 --image-every 0",
               "--quick", "--evaluate-args", "--gen-per-user 2 --seeds 1", "--timing-batch", "2",
               "--timing-repeats", "1", "--threads", "1", "--jobs", "2", "--markdown", str(md)])
    assert rc == 0
    cmp = json.loads((out / "compare.json").read_text())
    assert [r["route"] for r in cmp["rows"]] == ["kl", "vq-latent", "vq-diffusion"]
    for r in cmp["rows"]:
        assert r["psnr_db"] > 0 and 0 <= r["c2st"] <= 1 and r["s_per_sample"] > 0 and r["size_mb"] > 0
        assert r["physics_max"] is not None  # a simulated dataset carries its radar axes
        meta = json.loads((out / r["route"] / "dopplergen.json").read_text())
        assert meta["route"] == r["route"]
    assert cmp["rows"][1]["codebook"]["num_codes"] == 128 and cmp["rows"][0]["codebook"] is None
    # The two VQ routes share one stage-1 run; the KL route has its own.
    assert {p.name for p in out.glob("*-vae")} == {"kl-vae", "vq-vae"}
    # --jobs 2 ran the stages as subprocesses, each with its own log.
    assert {p.stem for p in (out / "logs").glob("*.log")} >= {
        "train-vae-kl", "train-vae-vq", "train-transformer-vq-diffusion", "evaluate-kl",
        "evaluate-vq-diffusion"}
    text = md.read_text()
    assert "| metric | `kl` | `vq-latent` | `vq-diffusion` |" in text and "## Verdict per metric" in text
    assert (md.parent / "compare" / "compare_samples.png").stat().st_size > 1000
    assert (md.parent / "compare" / "eval-vq-diffusion" / "report.md").is_file()
    # A rerun takes the pipelines and reports that exist instead of redoing them.
    before = (out / "eval-kl" / "report.json").stat().st_mtime_ns
    assert main(["compare", "--data", str(data), "--out", str(out), "--preset", "tiny", "--quick",
                 "--evaluate-args",
                 "--gen-per-user 2 --seeds 1", "--timing-batch", "2", "--timing-repeats", "1"]) == 0
    assert (out / "eval-kl" / "report.json").stat().st_mtime_ns == before
