"""The Docker image's lock files (requirements/*.txt) agree with pyproject.toml, carry hashes, keep training
packages out of the serving image, and hold the torch build their name says; the serving code imports only
what the serving lock installs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.e2e.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomllib's predecessor, when installed
    tomllib = pytest.importorskip("tomli")

LOCK_DIR = REPO / "requirements"
LOCKS = {  # file -> (extras locked beside the base dependencies, torch build)
    "serve.txt": ((), "cuda"),
    "serve-cpu.txt": ((), "cpu"),
    "train.txt": (("train",), "cuda"),
    "train-cpu.txt": (("train",), "cpu"),
}
TRAINING_ONLY = {"accelerate", "torchmetrics", "peft"}  # imported by training/ only


def read_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, sha256 hashes) of a `pip-compile --generate-hashes`-style file."""
    out = {}
    for line in path.read_text().replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req, *options = line.split()
        name, sep, version = req.partition("==")
        assert sep and version, f"{path.name}: {req!r} is not pinned with =="
        hashes = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=")]
        out[canonicalize_name(name)] = (Version(version), hashes)
    return out


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module", params=sorted(LOCKS))
def lock(request) -> tuple[str, dict]:
    path = LOCK_DIR / request.param
    assert path.is_file(), f"{path} is missing: run `make lock`"
    return request.param, read_lock(path)


def test_every_direct_dependency_is_locked_within_its_range(lock) -> None:
    name, pins = lock
    extras, _ = LOCKS[name]
    wanted = (list(project()["dependencies"])
              + [d for e in extras for d in project()["optional-dependencies"][e]])
    for spec in map(Requirement, wanted):
        key = canonicalize_name(spec.name)
        assert key in pins, f"{name} lacks {spec.name}: run `make lock`"
        version = pins[key][0]
        assert spec.specifier.contains(version, prereleases=True), (
            f"{name}: {key}=={version} is outside {spec}"
        )


def test_every_locked_package_has_a_hash(lock) -> None:
    name, pins = lock
    for pkg, (_, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), (
            f"{name}: {pkg} has no sha256"
        )


def test_serving_locks_hold_no_training_package() -> None:
    for name, (extras, _) in LOCKS.items():
        pins = read_lock(LOCK_DIR / name)
        present = TRAINING_ONLY & set(pins)
        assert (present == TRAINING_ONLY) if "train" in extras else not present, (name, present)
    train_extra = {canonicalize_name(Requirement(d).name)
                   for d in project()["optional-dependencies"]["train"]}
    assert TRAINING_ONLY <= train_extra and not TRAINING_ONLY & {
        canonicalize_name(Requirement(d).name) for d in project()["dependencies"]}


def test_each_lock_holds_the_torch_build_its_name_says(lock) -> None:
    """CPU locks: torch's +cpu build and no CUDA libraries; CUDA locks: PyPI's torch. Both the tested
    version."""
    name, pins = lock
    torch_version = pins["torch"][0]
    tested = re.search(r"^torch==(\S+)", (REPO / "constraints-cpu.txt").read_text(), re.M).group(1)
    assert torch_version.public == Version(tested).public, \
        f"{name}: torch {torch_version}, tests ran {tested}"
    cuda_libs = [p for p in pins if p.startswith("nvidia-") or p == "triton"]
    if LOCKS[name][1] == "cpu":
        assert torch_version.local == "cpu" and not cuda_libs, (name, torch_version, cuda_libs)
    else:
        assert torch_version.local is None, f"{name}: {torch_version} is not PyPI's build"


def test_dockerfile_installs_only_locked_hashed_packages() -> None:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [ln for ln in text.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    locked = [ln for ln in installs if "--require-hashes" in ln]
    assert locked and all("--no-deps" in ln and "requirements/" in ln for ln in locked), installs
    for ln in installs:  # the only other install is the project itself, without dependencies
        assert ln in locked or re.search(r"pip install --no-deps( --no-build-isolation)? \.(\s|$)", ln), ln
    assert "requirements/$DEPS.txt" in text and "requirements/$DEPS-cpu.txt" in text
    assert re.search(r"^ARG DEPS=serve$", text, re.M), "the default image must be the serving one"


def third_party_imports(*folders: str) -> dict[str, str]:
    """Top-level module -> first file importing it, for every non-stdlib, non-project import (nested too)."""
    local = {"models", "service", "training", "tests"}
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in (n.split(".")[0] for n in names):
                    if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_serving_code_imports_only_what_the_serving_lock_installs() -> None:
    """service/ and models/ (what the serving image runs) against requirements/serve.txt."""
    pins = set(read_lock(LOCK_DIR / "serve.txt"))
    dists = importlib.metadata.packages_distributions()
    for module, where in third_party_imports("service", "models").items():
        owners = {canonicalize_name(d) for d in dists.get(module, [])}
        assert owners, f"{where} imports {module}, which no installed distribution provides"
        assert owners & pins, \
            f"{where} imports {module} ({sorted(owners)}), absent from requirements/serve.txt"


def test_training_commands_without_the_train_extra_say_what_to_install() -> None:
    """As in the serving image: accelerate is absent, so train-vae stops with the install line, not a
    traceback."""
    code = ("import sys; sys.modules['accelerate'] = None; from training.cli import main; "
            "sys.exit(main(['train-vae', '--help']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 1 and "pip install 'dopplergen[train]'" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    serve = subprocess.run([sys.executable, "-c", code.replace("train-vae", "serve")], capture_output=True,
                           text=True, cwd=REPO, timeout=120)
    # serve needs none of them
    assert serve.returncode == 0 and "--pipeline" in serve.stdout, serve.stderr[-2000:]
