"""Bulk export: dataset-format output, per-file seeds, resume, and byte-identity across process layouts."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.refusals import refused
from training.cli import main
from training.data.generated import derive_seed

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--per-user", "3", "--steps", "2", "--batch-size", "2", "--seed", "7", "--threads", "1"]




def _generate(pipeline, out, *extra):
    assert main(["generate", "--pipeline", pipeline, "--out", str(out), *BASE, *extra]) == 0


def _manifest(out):
    with open(out / "manifest.csv") as f:
        return list(csv.DictReader(f))


def _bytes(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(7, "alice", 0) == derive_seed(7, "alice", 0)
    seeds = {derive_seed(s, u, i) for s in (0, 1) for u in ("alice", "bob") for i in range(50)}
    assert len(seeds) == 200 and max(seeds) < 2**53
    assert derive_seed(0, "alice", 3) == 1510638077346912  # pinned: a resumed export must get the same seeds


def test_generate_writes_a_loadable_dataset_with_seed_records(tiny_pipeline_dir, tmp_path):
    from training.data.dataset import load_dataset

    out = tmp_path / "gen"
    _generate(tiny_pipeline_dir, out, "--users", "bob,alice")
    rows = _manifest(out)
    assert list(rows[0]) == ["path", "user", "split", "seed", "steps", "guidance", "scheduler"]
    assert [(r["user"], int(r["seed"])) for r in rows] == [(u, derive_seed(7, u, i)) for u in ("alice", "bob")
                                                           for i in range(3)]
    assert ({(r["steps"], r["guidance"], r["scheduler"], r["split"]) for r in rows}
            == {("2", "2.0", "dpmsolver++", "train")})
    arr = np.load(out / rows[0]["path"])
    assert arr.dtype == np.float32 and arr.shape == (32, 32) and arr.max() <= 0 and arr.min() >= -60
    meta = json.loads((out / "meta.json").read_text())
    assert meta["generation"]["users"] == ["alice", "bob"] and meta["dyn_range_db"] == 60.0
    ds = load_dataset(out)  # the export is a dataset folder like any other
    assert ds.users == ["alice", "bob"] and ds.x.shape == (6, 1, 32, 32)


def test_resume_regenerates_only_missing_files_identically(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "gen"
    _generate(tiny_pipeline_dir, out)
    before = _bytes(out)
    victim = out / "bob" / "bob_gen00001.npy"
    victim.unlink()
    untouched = out / "alice" / "alice_gen00000.npy"
    mtime = untouched.stat().st_mtime_ns
    _generate(tiny_pipeline_dir, out)
    assert _bytes(out) == before  # same bytes, manifest and meta included
    assert untouched.stat().st_mtime_ns == mtime  # existing files were skipped, not rewritten
    # Extending the export adds files and keeps the old ones.
    _generate(tiny_pipeline_dir, out, "--per-user", "4")
    assert len(_manifest(out)) == 12 and all(_bytes(out)[k] == v for k,
                                             v in before.items() if k.endswith(".npy"))


def test_resume_refuses_other_settings(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    _generate(tiny_pipeline_dir, out, "--users", "carol")
    refused(capsys, "other settings", main(["generate", "--pipeline", tiny_pipeline_dir, "--out", str(out),
                                            *BASE, "--users", "carol", "--guidance", "3.0"]))


def test_unknown_user_is_a_clear_error(tiny_pipeline_dir, tmp_path, capsys):
    refused(capsys, "unknown users", main(["generate", "--pipeline", tiny_pipeline_dir, "--out",
                                           str(tmp_path / "gen"), *BASE, "--users", "mallory"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_write_the_same_bytes_as_one(tiny_pipeline_dir, tmp_path):
    # One thread per process in both runs: CPU kernels may round differently at another thread count.
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["generate", "--pipeline", tiny_pipeline_dir, *BASE, "--per-user", "5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "training", *args, "--out", str(one)], check=True,
                   cwd=ROOT, env=env, capture_output=True)
    # On a machine without CUDA, accelerate's multi-process launcher gives each process a CPU rank (gloo).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), "-m", "training"]
    r = subprocess.run([*launch, *args, "--out", str(two)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 process(es)" in r.stdout
    assert _bytes(one) == _bytes(two)


def test_generate_exports_a_vq_diffusion_pipeline_and_resumes_identically(tmp_path):
    import torch

    from models.pipeline import build_untrained_pipeline

    torch.manual_seed(0)
    pipe = tmp_path / "vqd"
    build_untrained_pipeline("tiny", ["alice", "bob"], route="vq-diffusion",
                             scheduler="vq-diffusion").save(pipe)
    out = tmp_path / "gen"
    _generate(str(pipe), out)
    rows = _manifest(out)
    assert len(rows) == 6 and {r["scheduler"] for r in rows} == {"vq-diffusion"}
    first = _bytes(out)
    (out / rows[2]["path"]).unlink()
    _generate(str(pipe), out)
    assert _bytes(out) == first  # the missing file is regenerated bit for bit from its recorded seed


def test_enrolled_people_are_sampled_as_the_service_samples_them(tiny_pipeline_dir, tmp_path):
    """One resolver (models.sampling.resolve): a person the pipeline lists as enrolled gets ENROLLED_GUIDANCE,
    the others the pipeline's default, in one export; --guidance overrides both."""
    from models.pipeline import DopplerPipeline
    from models.sampling import ENROLLED_GUIDANCE, sample

    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    pipe.meta["enrolled_users"] = {"bob": {"k": 3}}
    enrolled = tmp_path / "enrolled"
    pipe.save(enrolled)
    out = tmp_path / "gen"
    _generate(str(enrolled), out)
    rows = _manifest(out)
    want = {u: 2.0 for u in pipe.users} | {"bob": ENROLLED_GUIDANCE}
    assert {r["user"]: float(r["guidance"]) for r in rows} == want
    meta = json.loads((out / "meta.json").read_text())["generation"]
    assert meta["guidance"] == 2.0 and meta["guidance_by_user"] == {"bob": ENROLLED_GUIDANCE}
    bob = [r for r in rows if r["user"] == "bob"][0]
    want = sample(pipe, [pipe.user_encoder.index_of("bob"), 0], [int(bob["seed"]), 0], num_inference_steps=2,
                  guidance_scale=[ENROLLED_GUIDANCE, 2.0], pad_to=2)[0, 0].numpy()
    np.testing.assert_array_equal(np.load(out / bob["path"]), want)
    forced = tmp_path / "forced"
    _generate(str(enrolled), forced, "--guidance", "1.5")
    assert {float(r["guidance"]) for r in _manifest(forced)} == {1.5}
    assert "guidance_by_user" not in json.loads((forced / "meta.json").read_text())["generation"]
