"""All-or-nothing dataset folders: build in a hidden temporary folder beside the target, rename it into
place."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from training.data.dataset import DatasetError


def check_free(out: Path) -> None:
    """DatasetError unless `out` is absent or an empty folder (nothing of a user's is ever replaced)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} already exists and is not empty; pick a new --out (nothing was written)")


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it becomes `out`, on any error it is removed."""
    out = Path(out)
    check_free(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty (checked above); a rename cannot replace a folder that has entries
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
