"""Measurements behind the docs, outside the product packages: `python -m experiments.<name>`; each states its
measured conclusion at the top."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def result_file(path: str) -> tuple[Path, Any]:
    """The JSON result file (its folder made) and the evaluator's log beside it (<name>.log, timestamped
    lines)."""
    from training.eval.context import Log

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, Log(out.with_suffix(".log"))
