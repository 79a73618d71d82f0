"""Both training stages end to end on the tiny preset: files written, retention, exact resume, CLI, 2
processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.cli import main as cli
from training.stages import checkpoints, logs

ROOT = Path(__file__).resolve().parents[2]


def _write_dataset(path: Path, users: int = 3, per_user: int = 6, size: int = 32) -> Path:
    """A small dataset folder in the interchange format, with a per-user pattern (torso line + limb
    sinusoid)."""
    import csv

    import numpy as np

    rng = np.random.default_rng(0)
    t, f = np.arange(size)[None, :], np.arange(size)[:, None]
    rows = []
    for u in range(users):
        (path / f"user{u}").mkdir(parents=True, exist_ok=True)
        for i in range(per_user):
            torso = size * (0.3 + 0.15 * u)
            limb = torso + size * 0.25 * np.sin(2 * np.pi * t * (2 + u) / size + rng.uniform(0, 6.3))
            img = (50 * np.exp(-((f - torso) ** 2) / 4) + 35 * np.exp(-((f - limb) ** 2) / 6)
                   + rng.normal(0, 2, (size, size)))
            img = np.clip(img - img.max(), -60, 0).astype(np.float32)
            rel = f"user{u}/{i:03d}.npy"
            np.save(path / rel, img)
            rows.append((rel, f"user{u}", "test" if i >= per_user - 2 else "train"))
    with open(path / "manifest.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "user", "split"), *rows])
    (path / "meta.json").write_text(json.dumps({"dyn_range_db": 60.0, "image_size": [size, size]}))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    return str(_write_dataset(tmp_path_factory.mktemp("data") / "toy"))


def _vae_args(data: str, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train-vae", "--preset", "tiny", "--data", data, "--out", str(out), "--max-steps", str(steps),
            "--batch-size", "4", "--checkpointing-steps", "1", "--checkpoints-total-limit", "2",
            "--log-every", "1",
            "--image-every", "0", *extra]


def _unet_args(data: str, vae: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train-unet", "--preset", "tiny", "--data", data, "--vae", str(vae), "--out", str(out),
            "--run-dir", str(out) + "-run", "--max-steps", str(steps), "--batch-size", "4",
            "--checkpointing-steps", "1", "--checkpoints-total-limit", "2", "--log-every", "1",
            "--image-every", "0",
            "--preview-per-user", "1", "--num-inference-steps", "2", *extra]


@pytest.fixture(scope="module")
def vae_run(dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae") / "run"
    assert cli(_vae_args(dataset, run, 3)) == 0
    return run


def test_vae_writes_expected_files_and_measured_scaling(vae_run):
    from diffusers import AutoencoderKL

    # retention limit 2 of 3 saved
    assert sorted(s for s, _ in checkpoints.list_checkpoints(vae_run)) == [2, 3]
    ckpt = vae_run / "checkpoints" / "checkpoint-3"
    names = {p.name for p in ckpt.iterdir()}
    assert {"model.safetensors", "optimizer.safetensors", "ema.safetensors", "rng_0.safetensors",
            "rng_0.json",
            "step.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pkl", ".pt"))], "resume state holds a pickle"
    for f in ("training_options.json", "log.jsonl", "vae_summary.json", "figures/recon.png",
              "figures/loss.png"):
        assert (vae_run / f).is_file(), f
    assert [r["step"] for r in logs.read_jsonl(vae_run / "log.jsonl")] == [1, 2, 3]
    assert json.loads((vae_run / "training_options.json").read_text())["max_steps"] == 3
    summary = json.loads((vae_run / "vae_summary.json").read_text())
    vae = AutoencoderKL.from_pretrained(vae_run / "vae")  # stock diffusers
    assert vae.config.scaling_factor == pytest.approx(1.0 / summary["latent_std"])
    assert vae.config.scaling_factor != 1.0 and set(summary["psnr_db"]) == {"train", "test"}


def test_fresh_run_refuses_a_folder_with_checkpoints(dataset, vae_run, capsys):
    assert cli(_vae_args(dataset, vae_run, 3)) == 2  # without --resume the retention would delete new ones
    assert "already holds resume checkpoints; pass --resume latest" in capsys.readouterr().err


def test_unet_exports_a_loadable_pipeline(dataset, vae_run, tmp_path):
    from diffusers import UNet2DConditionModel

    from models.pipeline import DopplerPipeline
    from models.sampling import sample

    out = tmp_path / "pipe"
    assert cli(_unet_args(dataset, vae_run / "vae", out, 3, "--export-dtype", "fp16")) == 0
    run = Path(str(out) + "-run")
    assert sorted(s for s, _ in checkpoints.list_checkpoints(run)) == [2, 3]
    assert (run / "training_options.json").is_file() and (out / "figures" / "preview.png").is_file()
    meta = json.loads((out / "dopplergen.json").read_text())
    assert meta["route"] == "kl" and meta["version"].startswith("0.1.0+") and meta["evaluation"] is None
    assert meta["dataset"]["path"] == dataset and meta["dataset"]["fingerprint"]
    assert meta["training"]["unet"]["max_steps"] == 3 and meta["training"]["vae_summary"]["steps"] == 3
    vae_sf = json.loads((vae_run / "vae" / "config.json").read_text())["scaling_factor"]
    assert meta["latent_scaling_factor"] == pytest.approx(vae_sf)
    unet = UNet2DConditionModel.from_pretrained(out, subfolder="unet")  # stock diffusers
    assert unet.config.cross_attention_dim == 32
    stored = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(t.dtype == torch.float16 for t in stored.values())  # --export-dtype fp16 halves the folder
    pipe = DopplerPipeline.load(out)
    assert pipe.users == ["user0", "user1", "user2"] and pipe.denoiser.dtype == torch.float32
    x = sample(pipe, [0, 2], [1, 2], num_inference_steps=2, guidance_scale=meta["guidance_scale"])
    assert x.shape == (2, 1, 32, 32) and float(x.max()) <= 0.0
    # the texture bank (default 20 per person): all 4 train recordings of each of the 3 people
    assert meta["texture"]["count"] == 12 and list(pipe.texture.config.users) == pipe.users
    pipe.texture = None
    assert not torch.equal(x, sample(pipe, [0, 2], [1, 2], num_inference_steps=2,
                                     guidance_scale=meta["guidance_scale"]))
    # The exported UNet holds the EMA weights, not the raw ones of the last step.
    raw = load_file(run / "checkpoints" / "checkpoint-3" / "model.safetensors")
    name = "unet.conv_in.weight"
    assert not torch.equal(raw[name].half(), stored["conv_in.weight"])


class _Killed(Exception):
    pass


def _kill_after(monkeypatch, k: int) -> None:
    """Simulate a crash right after checkpoint-k is written (the run was meant to go on)."""
    real = checkpoints.save_checkpoint

    def save_then_die(accelerator, run_dir, step, limit, ema=None):
        path = real(accelerator, run_dir, step, limit, ema=ema)
        if step == k:
            raise _Killed
        return path

    # both stages call it through the module
    monkeypatch.setattr(checkpoints, "save_checkpoint", save_then_die)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(next(folder.glob("*.safetensors")))


@pytest.mark.parametrize("stage", ["vae", "unet"])
def test_kill_and_resume_equals_uninterrupted(stage, dataset, vae_run, tmp_path, monkeypatch):
    def args(out: Path, *extra: str) -> list[str]:
        if stage == "vae":
            return _vae_args(dataset, out, 4, "--lr-schedule", "cosine", "--lr-warmup-steps", "1", *extra)
        return _unet_args(dataset, vae_run / "vae", out, 4, "--lr-schedule", "cosine",
                          "--lr-warmup-steps", "1", *extra)

    assert cli(args(tmp_path / "a")) == 0
    with monkeypatch.context() as m:
        _kill_after(m, 2)
        with pytest.raises(_Killed):
            cli(args(tmp_path / "b"))
    run_b = tmp_path / "b" if stage == "vae" else tmp_path / "b-run"
    assert [s for s, _ in checkpoints.list_checkpoints(run_b)] == [1, 2]
    assert cli(args(tmp_path / "b", "--resume", "latest")) == 0
    run_a = tmp_path / "a" if stage == "vae" else tmp_path / "a-run"
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(run_a / "checkpoints/checkpoint-4" / f),
                load_file(run_b / "checkpoints/checkpoint-4" / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    export = ["vae"] if stage == "vae" else ["unet", "user_encoder"]
    for sub in export:
        a, b = _weights(tmp_path / "a" / sub), _weights(tmp_path / "b" / sub)
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    # The JSONL of the resumed run has each step once.
    assert [r["step"] for r in logs.read_jsonl(run_b / "log.jsonl")] == [1, 2, 3, 4]


def test_dry_run_resolves_registry_file_and_flags(tmp_path, capsys):
    cfg_file = tmp_path / "opts.yaml"
    cfg_file.write_text("lr: 1e-3\nbatch_size: 7\nkl_weight: 0.01\n")
    assert cli(["train-vae", "--preset", "demo", "--config", str(cfg_file), "--batch-size", "9",
                "--dry-run"]) == 0
    opts = json.loads(capsys.readouterr().out)
    from training.config import TRAINING_DEFAULTS

    assert opts["max_steps"] == TRAINING_DEFAULTS["vae"]["demo"]["max_steps"]  # preset registry
    assert opts["lr"] == 1e-3 and opts["kl_weight"] == 0.01  # file (YAML "1e-3" is a string; coerced)
    assert opts["batch_size"] == 9  # flag beats file
    assert cli(["train-unet", "--preset", "tiny", "--dry-run", "--no-time-shift"]) == 0
    opts = json.loads(capsys.readouterr().out)
    assert opts["time_shift"] is False and opts["null_user_prob"] == 0.1


@pytest.mark.parametrize("content, message", [
    ('{"learning_rate": 0.1}', "unknown option 'learning_rate'"),
    ('{"batch_size": "big"}', "expected int"),
    ('{"batch_size": 0}', "batch_size must be > 0"),
    ('{"null_user_prob": 1.5}', "null_user_prob must be in"),
])
def test_bad_options_are_clear_errors(content, message, tmp_path, capsys):
    f = tmp_path / "bad.json"
    f.write_text(content)
    assert cli(["train-unet", "--config", str(f), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_unknown_flag_and_missing_paths(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["train-vae", "--max-stepz", "3"])
    assert exc.value.code == 2 and "unrecognized arguments: --max-stepz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["train-unet", "--prediction-type", "x0"])  # not a choice
    assert cli(["train-unet", "--preset", "tiny"]) == 2
    assert "missing required option(s): --data, --out, --vae" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_with_accelerate_launch(dataset, vae_run, tmp_path):
    out = tmp_path / "pipe2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # accelerate's `--cpu` launcher starts >1 process only through mpirun; `--multi_gpu` spawns them with
    # torchrun, and training.stages.loop asks accelerate for gloo on the CPU when there is no CUDA.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training"]
    proc = subprocess.run(launcher + _unet_args(dataset, vae_run / "vae", out, 2), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "dopplergen.json").is_file()
    opts = json.loads((Path(str(out) + "-run") / "training_options.json").read_text())
    assert opts["batch_size"] == 4
    rows = logs.read_jsonl(Path(str(out) + "-run") / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2]  # logged once (main process), not once per process
    assert rows[0]["num_processes"] == 2
    ckpt = Path(str(out) + "-run") / "checkpoints" / "checkpoint-2"
    # one per process
    assert (ckpt / "rng_0.safetensors").is_file() and (ckpt / "rng_1.safetensors").is_file()
