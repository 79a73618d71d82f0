"""The docs cite only what the repository has: every relative link and every backticked repository path in
README.md and docs/*.md names a file or folder that exists (issue 37: docs cited files that were never in the
repository)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Backticked text that starts with one of these is read as a repository path.
TOP = ("models/", "service/", "training/", "tests/", "docs/", "benchmarks/", "experiments/", "scripts/",
       "checkpoints/", "deploy/", "requirements/", "Makefile", "Dockerfile", "pyproject.toml", "README.md",
       "constraints-cpu.txt", "docker-compose")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"`([^`\s]+)`")
# Files the docs ask the reader to create (they are not shipped).
YOURS = {"docker-compose.override.yml"}
NOT_A_PATH = re.compile(r"[<>*{}$|]|\.\.\.")  # placeholders, globs, variables, elisions


def links(text: str) -> list[str]:
    """Relative link targets, without their #fragment."""
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            continue  # http:, mailto:, in-page anchors, absolute URLs of the service
        out.append(target.split("#")[0])
    return [t for t in out if t]


def repo_paths(text: str) -> list[str]:
    """Backticked repository paths (a file, or a folder), without a :line or ::test suffix."""
    out = []
    for token in CODE.findall(text):
        token = token.split("::")[0]
        token = re.sub(r":\d+(-\d+)?$", "", token).rstrip(".,;")
        if token.startswith(TOP) and not NOT_A_PATH.search(token) and token not in YOURS:
            out.append(token)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_cited_file_exists(doc):
    text = doc.read_text()
    missing = [t for t in links(text) if not (doc.parent / t).exists()]
    missing += [f"`{p}`" for p in repo_paths(text) if not (ROOT / p).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} cites what the repository does not have: {missing}"


def test_the_check_fails_on_a_missing_file(tmp_path):
    text = "See [the mission](MISSION.md), `docs/PHYSICS.md`, [ok](README.md) and <http://x/y.md>."
    assert links(text) == ["MISSION.md", "README.md"]
    assert repo_paths(text) == ["docs/PHYSICS.md"]
    assert not (ROOT / "docs/PHYSICS.md").exists() and not (ROOT / "MISSION.md").exists()
