"""The layout rules (docs/internals.md), checked on the source of models/, service/ and training/:

- no import cycle among their modules, imports inside functions included, and imports by name too (a dotted
  string naming a module, as in training/cli.py's COMMANDS table for importlib);
- no module over 350 lines;
- imports only along the dependency direction service -> models <- training: models imports neither wing,
  service never imports training, training never imports service, except the edges in ALLOWED;
- one home for the dataset-folder contract: only models/dataset_folder.py uses manifest.csv's name as a path
  (everyone else reads or writes it through read_manifest / manifest_path / MANIFEST there).

The checker is plain functions over a folder, so the tests at the bottom run it on small synthetic trees too
and show that it fails where it should.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "service", "training")
MAX_LINES = 350
# What each package may import (besides itself).
MAY_IMPORT = {"models": set(), "service": {"models"}, "training": {"models"}}
# Edges against the direction, each with its reason. Keep this list short.
ALLOWED = {
    ("training.cli",
     "service.cli"): "`dopplergen serve`: the one lazy dispatch (by name) from the CLI to the service",
}
MANIFEST_HOME = "models.dataset_folder"  # the one module that opens, or names the path of, a manifest
# A string that is nothing but a path ending in the manifest's name: "manifest.csv", f"{root}/manifest.csv"'s
# "/manifest.csv", ".manifest.csv.tmp". A sentence that mentions it (a message, a docstring) has spaces.
MANIFEST_PATH = re.compile(r"[\w./\\-]*manifest\.csv[\w.]*")


# ---- the checker -------------------------------------------------------------------------------------------
def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages (a package is its __init__)."""
    found = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _owner(name: str, known: set[str]) -> str | None:
    """The known module a dotted name lands in: itself, or its nearest known parent (a function or class in
    it)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Known modules that `module` imports anywhere in its file (top level or inside functions), or names as a
    dotted string (importlib dispatch)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                pkg = module.split(".")[: len(module.split(".")) - (node.level - 1) - (0 if is_pkg else 1)]
                base = ".".join(pkg + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
            names = [node.value] if node.value in known else []
        for name in names:
            target = _owner(name, known)
            if target and target != module:
                out.add(target)
    return out


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    mods = find_modules(root, packages)
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with an explicit stack)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt) and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def against_direction(graph: dict[str, set[str]], allowed=ALLOWED) -> list[tuple[str, str]]:
    """Edges from one package into another that MAY_IMPORT does not permit and ALLOWED does not list."""
    bad = []
    for src, targets in graph.items():
        a = src.split(".")[0]
        for dst in sorted(targets):
            b = dst.split(".")[0]
            if b != a and b not in MAY_IMPORT.get(a, set()) and (src, dst) not in allowed:
                bad.append((src, dst))
    return bad


def manifest_namers(root: Path, packages: tuple[str, ...] = PACKAGES,
                    home: str = MANIFEST_HOME) -> dict[str, list[int]]:
    """Modules other than `home` that use manifest.csv's name as a path (a string or f-string piece that is
    only that path), with the lines: each re-implements a piece of the dataset contract outside its home."""
    found = {}
    for module, path in find_modules(root, packages).items():
        if module == home:
            continue
        lines = sorted({node.lineno for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
                        if isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and MANIFEST_PATH.fullmatch(node.value)})
        if lines:
            found[module] = lines
    return found


def long_modules(root: Path, packages: tuple[str, ...] = PACKAGES, limit: int = MAX_LINES) -> dict[str, int]:
    return {
        m: n
        for m, p in find_modules(root, packages).items()
        if (n := len(p.read_text().splitlines())) > limit
    }


# ---- the project -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_no_import_cycle(graph):
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_imports_follow_the_dependency_direction(graph):
    assert against_direction(graph) == []


def test_every_allowed_exception_is_still_needed(graph):
    stale = [edge for edge in ALLOWED if edge[1] not in graph.get(edge[0], set())]
    assert stale == [], f"remove from ALLOWED: {stale}"


def test_no_module_over_the_line_limit():
    assert long_modules(ROOT) == {}


def test_only_the_dataset_contract_names_the_manifest():
    assert manifest_namers(ROOT) == {}, f"read or write manifest.csv through {MANIFEST_HOME}"


def test_the_checker_sees_the_project(graph):
    """Guards against a checker that passes because it reads nothing: known edges of each kind are found."""
    assert "training.eval.plots" in graph["training.stages.export"]  # top-level `from ... import`
    assert "training.eval.evaluate" in graph["training.compare"]  # an import inside a function
    # a module named in a string (importlib dispatch)
    assert "training.data.simulate" in graph["training.cli"]
    assert "models.pipeline" in graph["service.state"]
    assert "models.dataset_folder" in manifest_namers(ROOT, home="")  # the home's MANIFEST = "manifest.csv"


# ---- the checker can fail ----------------------------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_checker_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "training/__init__.py": "",
        "training/a.py": "from training.b import f\n",
        "training/b.py": "def f():\n    from training import a\n    return a\n",
        "training/c.py": "import training.a\n",
    })
    g = import_graph(root, ("training",))
    assert g["training.b"] == {"training.a"} and g["training.c"] == {"training.a"}
    assert find_cycle(g) in (
        ["training.a", "training.b", "training.a"], ["training.b", "training.a", "training.b"]
    )
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": set()}) is None


def test_checker_finds_a_cycle_through_a_module_named_in_a_string(tmp_path):
    root = _tree(tmp_path, {
        "training/__init__.py": "",
        "training/cli.py": "COMMANDS = {'compare': 'training.compare'}\n",
        "training/compare.py": "def run():\n    from training.cli import COMMANDS\n",
    })
    assert find_cycle(import_graph(root, ("training",))) is not None


def test_checker_flags_imports_against_the_direction_and_long_modules(tmp_path):
    root = _tree(tmp_path, {
        "models/__init__.py": "",
        "models/core.py": "from service.app import app\n",
        "service/__init__.py": "",
        "service/app.py": "from models import core\nfrom training.loop import x\n",
        "training/__init__.py": "",
        "training/loop.py": "from . import cli\n" + "x = 1\n" * (MAX_LINES + 1),
        "training/cli.py": "def serve():\n    import service.app\n",
    })
    g = import_graph(root)
    assert g["training.loop"] == {"training.cli"}  # relative import resolved
    assert against_direction(g, allowed={}) == [
        ("models.core", "service.app"), ("service.app", "training.loop"), ("training.cli", "service.app")]
    assert against_direction(g, allowed={("training.cli", "service.app"): "test"}) == [
        ("models.core", "service.app"), ("service.app", "training.loop")]
    assert long_modules(root) == {"training.loop": MAX_LINES + 2}


def test_checker_flags_the_manifest_named_outside_its_home(tmp_path):
    root = _tree(tmp_path, {
        "models/__init__.py": "",
        "models/dataset_folder.py": 'MANIFEST = "manifest.csv"\n',
        "service/__init__.py": "",
        "service/examples.py": 'def rows(root):\n    return open(root / "manifest.csv").read()\n',
        "training/__init__.py": "",
        "training/generate.py": 'def tmp(out):\n    return f"{out}/.manifest.csv.tmp"\n',
        "training/cli.py": ('"""Reads manifest.csv."""\nERR = "no manifest.csv here"\n'
                            'MSG = f"{1}/manifest.csv (bad)"\n'),  # sentences, not paths
    })
    assert manifest_namers(root) == {"service.examples": [2], "training.generate": [2]}
    assert manifest_namers(root, home="service.examples") == {
        "models.dataset_folder": [1], "training.generate": [2]}
