"""Crash-safe resume state: a run SIGKILLed the moment a checkpoint folder appears resumes with --resume
latest and ends bitwise equal to an uninterrupted run; incomplete checkpoints are skipped (and said so); the
retention limit never deletes the last complete checkpoint; nothing in the state is a pickle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_train import _unet_args, _vae_args, _weights, dataset, vae_run  # noqa: F401 - fixtures
from training.cli import main as cli
from training.stages import checkpoints, resume_state

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4


def _args(stage: str, data: str, vae: Path, out: Path, steps: int = STEPS, *extra: str) -> list[str]:
    common = ("--lr-schedule", "cosine", "--lr-warmup-steps", "1", *extra)
    if stage == "vae":
        return _vae_args(data, out, steps, *common)
    return _unet_args(data, vae, out, steps, *common)


def _run_dir(stage: str, out: Path) -> Path:
    return out if stage == "vae" else Path(str(out) + "-run")


def _assert_same_run(stage: str, a: Path, b: Path) -> None:
    """Final resume state and exported weights are bitwise equal."""
    for f in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        x = load_file(_run_dir(stage, a) / f"checkpoints/checkpoint-{STEPS}" / f)
        y = load_file(_run_dir(stage, b) / f"checkpoints/checkpoint-{STEPS}" / f)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f
    for sub in ["vae"] if stage == "vae" else ["unet", "user_encoder"]:
        x, y = _weights(a / sub), _weights(b / sub)
        assert all(torch.equal(x[k], y[k]) for k in x), sub


def _kill_when_checkpoint_appears(argv: list[str], run_dir: Path, step: int) -> str:
    """Run `dopplergen argv` in a subprocess; SIGKILL it as soon as any checkpoint-{step}* folder exists."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "training", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root, seen = run_dir / "checkpoints", None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if root.is_dir():
            seen = next((p.name for p in root.iterdir() if p.name.startswith(f"checkpoint-{step}")), None)
            if seen:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.0005)
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, \
        f"not killed (rc {proc.returncode}): {proc.stderr.read()[-2000:]}"
    proc.stderr.close()
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["vae", "unet"])
def test_sigkill_as_a_checkpoint_appears_then_resume_latest_is_exact(
        stage, dataset, vae_run, tmp_path, capsys):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(_args(stage, dataset, vae_run / "vae", a)) == 0
    seen = _kill_when_checkpoint_appears(_args(stage, dataset, vae_run / "vae", b), _run_dir(stage, b), 2)
    names = sorted(p.name for p in (_run_dir(stage, b) / "checkpoints").iterdir())
    print(f"{stage}: killed when {seen} appeared; left {names}")  # which moment the kill hit, for the log
    assert "checkpoint-1" in names
    assert cli(_args(stage, dataset, vae_run / "vae", b, STEPS, "--resume", "latest")) == 0
    _assert_same_run(stage, a, b)
    assert not list((_run_dir(stage,
                              b) / "checkpoints").glob("*.partial")), "the stale partial folder was left"


def test_resume_latest_skips_incomplete_checkpoints_and_says_so(dataset, vae_run, tmp_path, capsys):  # noqa: F811
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(_args("vae", dataset, vae_run / "vae", a)) == 0
    assert cli(_args("vae", dataset, vae_run / "vae", b, 2)) == 0
    ckpts = b / "checkpoints"
    (ckpts / "checkpoint-2" / resume_state.OPTIMIZER_FILE).unlink()  # a torn write
    (ckpts / "checkpoint-3").mkdir()  # a half-written folder from a non-atomic writer: no step.json
    (ckpts / "checkpoint-3" / "optimizer.bin").write_bytes(b"\x80\x04")
    capsys.readouterr()
    assert cli(_args("vae", dataset, vae_run / "vae", b, STEPS, "--resume", "latest")) == 0
    out = capsys.readouterr().out
    assert "skipping checkpoint-3, incomplete: no readable step.json" in out
    assert "skipping checkpoint-2, incomplete: missing optimizer.safetensors" in out
    assert f"resumed from {ckpts / 'checkpoint-1'} at step 1" in out
    _assert_same_run("vae", a, b)
    # limit 2; the broken ones replaced or pruned
    assert [s for s, _ in checkpoints.list_checkpoints(b)] == [3, 4]


def test_a_failed_save_never_costs_the_last_complete_checkpoint(dataset, vae_run, tmp_path, monkeypatch):  # noqa: F811
    out = tmp_path / "run"
    assert cli(_args("vae", dataset, vae_run / "vae", out, 1, "--checkpoints-total-limit", "1")) == 0

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(resume_state, "save_training_state", disk_full)
        # a full disk is the machine's failure: one line and exit 1 from the CLI's error boundary
        assert cli(_args("vae", dataset, vae_run / "vae", out, 2, "--checkpoints-total-limit", "1",
                         "--resume", "latest")) == 1
    assert [s for s,
            _ in checkpoints.complete_checkpoints(out)] == [1], "the only complete checkpoint was deleted"
    assert (out / "checkpoints" / "checkpoint-2.partial").is_dir()
    assert cli(_args("vae", dataset, vae_run / "vae", out, 2, "--checkpoints-total-limit", "1",
                     "--resume", "latest")) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]


def test_resume_state_holds_no_pickle_and_an_explicit_incomplete_path_is_refused(vae_run, dataset, capsys):  # noqa: F811
    ckpt = vae_run / "checkpoints" / "checkpoint-3"
    for f in ckpt.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x04" and not f.name.endswith((".bin", ".pkl")), f"{f.name} looks pickled"
    assert cli(_args("vae", dataset, vae_run / "vae", vae_run, 4, "--resume",
                     str(ckpt.parent / "checkpoint-9"))) == 2
    assert "not a complete checkpoint folder" in capsys.readouterr().err
