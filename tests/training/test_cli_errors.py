"""The command line's error boundary, table-driven over every subcommand: a user's mistake is one line on
stderr, `dopplergen <command>: error: ...`, naming the thing, exit 2, and never a traceback (issue 37)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_train import _write_dataset
from training.cli import COMMANDS, main
from training.cli_errors import exit_code, one_line

ROOT = Path(__file__).resolve().parents[2]
PROGRESS = re.compile(r"^.*(\d+%\|.*|: +\d+% \d+/\d+ .*)$")  # tqdm bars and training.progress lines

# (id, argv with {tiny}/{d64}/{tmp}/{file}/{person} placeholders, exit code, what the line must name)
CASES = [
    ("simulate-users-0", "simulate --users 0 --out {tmp}/s", 2, "--users"),
    ("simulate-size-4", "simulate --size 4 --out {tmp}/s", 2, "--size"),
    ("train-vae-base-on-64px", "train-vae --preset base --data {d64} --out {tmp}/r", 2, "--size 256"),
    ("train-vae-base-on-64px-dry-run", "train-vae --preset base --data {d64} --dry-run", 2, "--preset demo"),
    ("train-vae-missing-data", "train-vae --data {tmp}/nope --out {tmp}/r", 2, "nope: not a directory"),
    ("train-vae-max-steps-0", "train-vae --data {d64} --out {tmp}/r --max-steps 0", 2, "max_steps"),
    ("train-vae-threads-0", "train-vae --data {d64} --out {tmp}/r --threads 0", 2, "--threads"),
    ("train-unet-base-on-64px", "train-unet --preset base --data {d64} --out {tmp}/p --vae {tmp}/v", 2,
     "re-import"),
    ("train-unet-missing-vae-option", "train-unet --data {d64} --out {tmp}/p", 2, "--vae"),
    ("train-transformer-base-on-64px",
     "train-transformer --preset base --data {d64} --out {tmp}/p --vae {tmp}/v", 2, "256x256"),
    ("evaluate-no-pipeline", "evaluate --pipeline {tmp}/nonexist --data {d64} --out {tmp}/e", 2, "nonexist"),
    ("evaluate-missing-data", "evaluate --pipeline {tiny} --data {tmp}/nope --out {tmp}/e", 2, "nope"),
    ("evaluate-steps-0", "evaluate --pipeline {tiny} --data {d64} --out {tmp}/e --steps 0", 2, "--steps"),
    ("generate-no-pipeline", "generate --pipeline {tmp}/nonexist --per-user 1 --out {tmp}/g", 2, "nonexist"),
    ("generate-pipeline-missing", "generate --per-user 1 --out {tmp}/g", 2, "--pipeline"),
    ("generate-out-is-a-file", "generate --pipeline {tiny} --per-user 1 --out {file}", 2, "a file is there"),
    ("generate-5000-ddpm-steps", "generate --pipeline {tiny} --per-user 1 --out {tmp}/g --steps 5000 "
     "--scheduler ddpm", 2, "at most 1000 steps"),
    ("generate-guidance-negative", "generate --pipeline {tiny} --per-user 1 --out {tmp}/g --guidance -5", 2,
     "--guidance"),
    ("generate-per-user-0", "generate --pipeline {tiny} --per-user 0 --out {tmp}/g", 2, "--per-user"),
    ("generate-unknown-user", "generate --pipeline {tiny} --per-user 1 --out {tmp}/g --users zed", 2, "zed"),
    ("texture-no-pipeline", "texture --pipeline {tmp}/nonexist --data {d64}", 2, "nonexist"),
    ("texture-per-user-0", "texture --pipeline {tiny} --data {d64} --per-user 0", 2, "--per-user"),
    ("enroll-pipeline-missing", "enroll --user dave --data {person} --out {tmp}/o", 2, "--pipeline"),
    ("enroll-steps-negative", "enroll --pipeline {tiny} --user dave --data {person} --out {tmp}/o --steps -1",
     2, "--steps"),
    ("enroll-batch-size-0",
     "enroll --pipeline {tiny} --user dave --data {person} --out {tmp}/o --batch-size 0", 2, "--batch-size"),
    ("enroll-no-pipeline", "enroll --pipeline {tmp}/nonexist --user dave --data {person} --out {tmp}/o", 2,
     "nonexist"),
    ("enroll-missing-data", "enroll --pipeline {tiny} --user dave --data {tmp}/nope --out {tmp}/o", 2,
     "nope"),
    ("enroll-bad-user-id", "enroll --pipeline {tiny} --user a/b --data {person} --out {tmp}/o", 2, "--user"),
    ("enroll-known-user", "enroll --pipeline {tiny} --user bob --data {person} --out {tmp}/o", 2,
     "--replace"),
    ("adapt-no-pipeline", "adapt --pipeline {tmp}/nonexist --data {d64} --out {tmp}/a", 2, "nonexist"),
    ("adapt-rank-0", "adapt --pipeline {tiny} --data {d64} --out {tmp}/a --rank 0", 2, "--rank"),
    ("import-missing-source", "import {tmp}/nope --out {tmp}/i --size 64", 2, "nope"),
    ("import-size-4", "import {d64} --out {tmp}/i --size 4", 2, "--size"),
    ("merge-missing-source", "merge {tmp}/nope {d64} --out {tmp}/m", 2, "nope"),
    ("compare-one-route", "compare --data {d64} --out {tmp}/c --routes kl", 2, "--routes"),
    ("compare-jobs-0", "compare --data {d64} --out {tmp}/c --jobs 0", 2, "--jobs"),
    ("serve-no-pipeline", "serve --pipeline {tmp}/nonexist", 2, "nonexist"),
    ("serve-bad-batch-size", "serve --pipeline {tiny} --max-batch-size 0", 2, "max_batch_size"),
    ("serve-users-dir-is-a-file", "serve --pipeline {tiny} --users-dir {file}", 2, "is a file"),
    ("unknown-option", "generate --pipeline {tiny} --per-user 1 --out {tmp}/g --bogus", 2, "--bogus"),
]


def test_the_table_covers_every_subcommand():
    assert {argv.split()[0] for _, argv, _, _ in CASES} == set(COMMANDS)


@pytest.fixture(scope="module")
def d64(tmp_path_factory) -> str:
    return str(_write_dataset(tmp_path_factory.mktemp("data") / "d64", users=2, per_user=3, size=64))


@pytest.fixture
def places(tiny_pipeline_dir, d64, tmp_path) -> dict[str, str]:
    (tmp_path / "afile").write_text("not a folder\n")
    person = tmp_path / "dave"
    person.mkdir()
    for i in range(2):
        np.save(person / f"{i}.npy", np.full((32, 32), -30.0, np.float32))
    return dict(tiny=tiny_pipeline_dir, d64=d64, tmp=str(tmp_path), file=str(tmp_path / "afile"),
                person=str(person))


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """(exit code, stderr lines that are not progress) of `dopplergen argv`, in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exits
        code = exc.code
    err = capsys.readouterr().err
    return code, [ln for ln in err.splitlines() if ln.strip() and not PROGRESS.match(ln)]


@pytest.mark.parametrize("argv, code, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_naming_it(argv, code, names, places, capsys):
    command = argv.split()[0]
    got, lines = run_cli([a.format(**places) for a in argv.split()], capsys)
    assert got == code, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"dopplergen {command}: error: "), lines
    assert names in lines[0] and "Traceback" not in lines[0]


def test_env_users_dir_naming_a_file_is_one_line(places, capsys, monkeypatch):
    monkeypatch.setenv("DOPPLERGEN_USERS_DIR", places["file"])
    code, lines = run_cli(["serve", "--pipeline", places["tiny"]], capsys)
    assert code == 2 and len(lines) == 1 and "is a file" in lines[0], lines


def test_a_failed_generate_leaves_nothing_that_blocks_the_next(places, capsys, monkeypatch):
    """A run that fails before its first sample takes back its meta.json, so a run with other settings into
    the same --out goes through."""
    out = Path(places["tmp"]) / "g"

    def broken(*a, **k):
        raise ValueError("sampling failed")
    monkeypatch.setattr("models.sampling.sample", broken)
    code, lines = run_cli(["generate", "--pipeline", places["tiny"], "--per-user", "1", "--out", str(out),
                           "--steps", "2"], capsys)
    assert code == 2 and lines == ["dopplergen generate: error: sampling failed"]
    assert not out.exists()
    monkeypatch.undo()
    code, lines = run_cli(["generate", "--pipeline", places["tiny"], "--per-user", "1", "--out", str(out),
                           "--steps", "3", "--batch-size", "3"], capsys)
    assert code == 0, lines
    assert json.loads((out / "meta.json").read_text())["generation"]["steps"] == 3


def test_a_failed_resume_keeps_the_earlier_export(places, capsys, monkeypatch):
    out = Path(places["tmp"]) / "g"
    assert run_cli(["generate", "--pipeline", places["tiny"], "--per-user", "1", "--out", str(out),
                    "--steps", "2"], capsys)[0] == 0
    monkeypatch.setattr("models.sampling.sample", lambda *a, **k: (_ for _ in ()).throw(ValueError("x")))
    assert run_cli(["generate", "--pipeline", places["tiny"], "--per-user", "2", "--out", str(out),
                    "--steps", "2"], capsys)[0] == 2
    assert (out / "meta.json").is_file() and len(list(out.rglob("*.npy"))) == 3  # the resumable export stays


def test_debug_shows_the_traceback(places):
    from models.pipeline import PipelineError

    with pytest.raises(PipelineError):
        main(["--debug", "generate", "--pipeline", places["tmp"] + "/nonexist", "--per-user", "1",
              "--out", places["tmp"] + "/g"])


def test_a_bug_is_not_hidden():
    assert exit_code(KeyError("x")) is None and exit_code(TypeError("x")) is None
    assert exit_code(SystemExit(0)) is None and exit_code(SystemExit("bad")) == 2
    assert exit_code(OSError(28, "No space left on device")) == 1
    assert exit_code(FileNotFoundError(2, "No such file or directory", "x.npy")) == 2
    line = one_line("generate", SystemExit("dopplergen generate: error: first:\n  second\nthird"))
    assert line == "dopplergen generate: error: first: second; third"
    assert one_line("import", FileNotFoundError(2, "No such file or directory", "x.npy")) == (
        "dopplergen import: error: x.npy: No such file or directory")


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    """The real process: exit status and stderr as a user sees them."""
    run = subprocess.run([sys.executable, "-m", "training", "generate", "--pipeline", str(tmp_path / "nope"),
                          "--per-user", "1", "--out", str(tmp_path / "g")], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"dopplergen generate: error: {tmp_path / 'nope'} is not a "
                                               "dopplergen pipeline folder (no dopplergen.json)"]


def test_enroll_casts_the_user_encoder_without_diffusers_noise(tiny_pipeline_dir, monkeypatch):
    import logging

    import diffusers.models.modeling_utils as modeling
    import torch

    from models.pipeline import DopplerPipeline
    from training.enroll import cast_quietly

    said = []
    monkeypatch.setattr(modeling.logger, "warning", lambda msg, *a, **k: said.append(msg)
                        if modeling.logger.isEnabledFor(logging.WARNING) else None)
    enc = DopplerPipeline.load(tiny_pipeline_dir).user_encoder
    assert cast_quietly(enc, torch.float16).embedding.weight.dtype == torch.float16
    assert not said
    enc.to("cpu", torch.float32)  # diffusers itself says it (the check above would have seen it)
    assert any("kept in float32" in m for m in said)
