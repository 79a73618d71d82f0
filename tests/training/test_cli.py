"""The `dopplergen` entry point itself: --version and the top-level help in users' words."""

import subprocess
import sys

import pytest

from models.pipeline_meta import FORMAT_VERSION
from training.cli import main


def test_version_names_the_package_and_the_pipeline_format(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("dopplergen ") and out.endswith(f"(pipeline format {FORMAT_VERSION})")


def test_top_level_help_speaks_of_the_job_not_of_modules():
    run = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--version" in run.stdout
    assert "micro-Doppler" in run.stdout and "imported lazily" not in run.stdout
