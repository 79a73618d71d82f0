"""The users folder (DOPPLERGEN_USERS_DIR): the people enrolled through POST /users, on disk. Safetensors and
JSON only: nothing in it is ever unpickled.

- `<user>.safetensors`: "rows" (1, T*D), and on a pipeline with a texture bank "texture_means" and
  "texture_residuals" (k, C, H, W) fp16.
- `<user>.json`: provenance, an object; `enrolled_at_ns` (an integer) orders the restore. The JSON is written
  to a temporary name and renamed into place last (`commit`): a `.safetensors` without its JSON is not an
  entry, so a crash or a cancelled enrolment never leaves a half-enrolled user.
- A damaged entry (a file missing, unreadable or truncated; JSON that is not an object or has a field of the
  wrong type; a row of the wrong shape) is skipped: `load` names its file and why, and leaves it in place.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.paths import is_new_user_id

Entry = tuple[str, dict[str, torch.Tensor], dict[str, Any]]  # user, tensors by name, provenance
_NUMBER = (int, float)
INFO_TYPES: dict[str, tuple[type, ...]] = {  # the provenance fields a restore may read, and their types
    "user_id": (str,), "files": (list,), "k": (int,), "steps": (int,), "lr": _NUMBER, "batch_size": (int,),
    "seed": (int,), "final_loss": (*_NUMBER, type(None)), "seconds": _NUMBER, "enrolled_at_ns": (int,),
}


@dataclass(frozen=True)
class Skipped:
    """An entry left out at start-up: its user, the file at fault (a name, no path) and why."""

    user_id: str
    file: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Damaged(Exception):
    """An entry that cannot be served: `file` is the one at fault."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(reason)
        self.file, self.reason = file, reason


class UsersFolder:
    """Enrolled users on disk (see the module docstring); `path` None keeps nobody."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)

    def load(self, row_width: int) -> tuple[list[Entry], list[Skipped]]:
        """Every sound committed entry, oldest enrolment first (the order their rows are appended in), and the
        damaged ones with why."""
        if self.path is None:
            return [], []
        out, skipped = [], []
        for meta_file in sorted(self.path.glob("*.json")):
            user = meta_file.stem
            if user.startswith("."):
                continue  # not an entry (a temporary file, an editor's)
            try:
                if not is_new_user_id(user):  # e.g. "nlx\n.json", written before IDs were matched in full
                    raise Damaged(meta_file.name, "not a valid user ID")
                info = self._info(meta_file)
                tensors = self._tensors(user, row_width)
            except Damaged as exc:
                skipped.append(Skipped(user, exc.file, exc.reason))
                continue
            out.append((user, tensors, info))
        return sorted(out, key=lambda e: (e[2].get("enrolled_at_ns", 0), e[0])), skipped

    @staticmethod
    def _info(meta_file: Path) -> dict[str, Any]:
        try:
            info = json.loads(meta_file.read_text())
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            raise Damaged(meta_file.name, f"not readable JSON ({type(exc).__name__})") from None
        if not isinstance(info, dict):
            raise Damaged(meta_file.name, f"JSON is {type(info).__name__}, not an object")
        for key, types in INFO_TYPES.items():
            if key in info and (not isinstance(info[key], types) or isinstance(info[key], bool)):
                raise Damaged(meta_file.name, f"{key} is {type(info[key]).__name__}, not "
                                              f"{' or '.join(t.__name__ for t in types)}")
        if "user_id" in info and info["user_id"] != meta_file.stem:
            raise Damaged(meta_file.name, "user_id is not the file's name")
        return info

    def _tensors(self, user: str, row_width: int) -> dict[str, torch.Tensor]:
        name = f"{user}.safetensors"
        try:
            tensors = load_file(str(self.path / name))
        except FileNotFoundError:
            raise Damaged(name, "missing") from None
        except Exception as exc:  # safetensors' own error for a truncated or malformed file, OSError
            raise Damaged(name, f"not readable safetensors ({type(exc).__name__})") from None
        rows = tensors.get("rows")
        if rows is None:
            raise Damaged(name, "no 'rows' tensor")
        if tuple(rows.shape) != (1, row_width) or not rows.is_floating_point():
            raise Damaged(name, f"rows are {rows.dtype} {tuple(rows.shape)}, not float (1, {row_width})")
        if not torch.isfinite(rows).all():
            raise Damaged(name, "rows are not finite")
        texture = [tensors.get(k) for k in ("texture_means", "texture_residuals")]
        if texture != [None, None] and (None in texture or texture[0].shape != texture[1].shape
                                        or texture[0].ndim != 4 or not len(texture[0])):
            raise Damaged(name, "texture_means and texture_residuals are not a pair of (k, C, H, W)")
        return tensors

    def save(self, user: str, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        """Write an entry, uncommitted: the tensors in place, the JSON under a temporary name until
        `commit`."""
        if self.path is None:
            return
        (self.path / f"{user}.json").unlink(missing_ok=True)  # a damaged entry of that name is replaced
        flat = {k: v.contiguous() for k, v in tensors.items()}
        save_file(flat, str(self._pending(user, ".safetensors")))
        self._pending(user, ".safetensors").replace(self.path / f"{user}.safetensors")
        self._pending(user).write_text(json.dumps(info, indent=2) + "\n")

    def commit(self, user: str) -> None:
        """Make a saved entry count (one rename)."""
        if self.path is not None:
            self._pending(user).replace(self.path / f"{user}.json")

    def discard(self, user: str) -> None:
        """Remove an uncommitted entry (a cancelled or failed enrolment)."""
        if self.path is not None:
            for path in (self._pending(user), self._pending(user, ".safetensors"),
                         self.path / f"{user}.safetensors"):
                path.unlink(missing_ok=True)

    def delete(self, user: str) -> None:
        if self.path is None:
            return
        (self.path / f"{user}.json").unlink(missing_ok=True)  # uncommitted first
        (self.path / f"{user}.safetensors").unlink(missing_ok=True)
        (self.path / f"{user}.status").unlink(missing_ok=True)  # service/users_sync.py

    def _pending(self, user: str, ext: str = ".json") -> Path:
        return self.path / f".{user}{ext}.tmp-{os.getpid()}"
