"""Resume checkpoints of a training run: checkpoint-{step} folders (safetensors + JSON, written atomically)
with a retention limit, and the dataset a run started on. (The exported pipeline folder, what the service
loads, is a separate thing: training/stages/export.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from training.config import ConfigError
from training.stages import resume_state

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "step.json"  # written last: its list of files is what makes a checkpoint complete
PARTIAL = ".partial"  # checkpoint-{step}.partial: being written; renamed to checkpoint-{step} when complete


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every checkpoint-{step} folder, complete or not, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)),
              p) for p in root.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def incomplete_reason(path: Path) -> str | None:
    """None for a complete checkpoint, else why it cannot be resumed from."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return f"no readable {STATE_FILE} (a run stopped while saving it?)"
    if "files" not in state:
        return ("written by an older dopplergen as accelerate pickles (optimizer.bin, random_states_*.pkl), "
                "never unpickled")
    missing = [f for f in state["files"] if not (path / f).is_file()]
    return f"missing {', '.join(missing)}" if missing else None


def complete_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    return [(s, p) for s, p in list_checkpoints(run_dir) if incomplete_reason(p) is None]


def save_checkpoint(accelerator: Accelerator, run_dir: str | Path, step: int, limit: int,
                    ema: Any = None) -> Path:
    """Resume state in checkpoint-{step} (resume_state: weights, optimiser, scaler, RNG of every process) +
    EMA.

    Written into checkpoint-{step}.partial and renamed when complete, so a crash leaves either a complete
    checkpoint or a .partial folder that resume ignores. Older checkpoints are pruned to `limit` only after
    the new one is complete: the newest complete checkpoint is never deleted.
    """
    root = Path(run_dir) / "checkpoints"
    path, partial = root / f"checkpoint-{step}", root / f"checkpoint-{step}{PARTIAL}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for stale in root.glob(f"checkpoint-*{PARTIAL}"):  # left by a crash
            shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    resume_state.save_rng(partial, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, **resume_state.save_training_state(accelerator, partial)}
        state["files"] += [f for r in range(accelerator.num_processes) for f in resume_state.rng_files(r)]
        if ema is not None:
            # EMA as safetensors rather than accelerate's pickled custom state: nothing is unpickled on
            # resume.
            save_file({f"{i:05d}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                      str(partial / "ema.safetensors"))
            state["ema_optimization_step"] = ema.optimization_step
            state["files"].append("ema.safetensors")
        (partial / STATE_FILE).write_text(json.dumps(state) + "\n")
        _fsync(partial)  # on disk before the rename: a power cut cannot leave a renamed folder of empty files
        if path.exists():  # the same step saved again (a resume from an older checkpoint): replace it
            shutil.rmtree(path)
        partial.rename(path)
        _fsync(root, files=False)
        _prune(run_dir, limit)
    accelerator.wait_for_everyone()
    return path


def _fsync(folder: Path, files: bool = True) -> None:
    """Flush the folder's files (and the folder's own entry list) to disk."""
    for f in folder.iterdir() if files else ():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(run_dir: str | Path, limit: int) -> None:
    """Keep the newest `limit` (>= 1) complete checkpoints; incomplete ones older than the newest go too."""
    complete = complete_checkpoints(run_dir)
    keep = {p for _, p in complete[-max(1, limit):]}
    newest = complete[-1][0] if complete else -1
    for step, p in list_checkpoints(run_dir):
        if p not in keep and (incomplete_reason(p) is None or step < newest):
            shutil.rmtree(p, ignore_errors=True)


def resume_from(accelerator: Accelerator, resume: str, run_dir: str | Path, ema: Any = None) -> int:
    """Load a checkpoint ("latest" or a path) and return its step; 0 when starting fresh."""
    if not resume:
        if list_checkpoints(run_dir):
            # A fresh run would interleave its checkpoints with the old ones and the retention limit would
            # then delete the wrong ones.
            raise ConfigError(f"{run_dir} already holds resume checkpoints; pass --resume latest to continue "
                                  "that run, or choose a new output folder")
        return 0
    if resume == "latest":
        path = None
        for _step, candidate in reversed(list_checkpoints(run_dir)):
            reason = incomplete_reason(candidate)
            if reason is None:
                path = candidate
                break
            accelerator.print(f"--resume latest: skipping {candidate.name}, incomplete: {reason}")
        if path is None:
            accelerator.print(f"--resume latest: no complete checkpoint in {run_dir}/checkpoints, "
                              "starting fresh")
            return 0
    else:
        path = Path(resume)
        reason = incomplete_reason(path) if path.is_dir() else "not a folder"
        if reason is not None:
            raise ConfigError(f"--resume {resume}: not a complete checkpoint folder ({reason})")
    state = json.loads((path / STATE_FILE).read_text())
    resume_state.load_training_state(accelerator, path, state)
    resume_state.load_rng(path, accelerator.process_index)
    if ema is not None:
        shadow = load_file(str(path / "ema.safetensors"))
        for i, p in enumerate(ema.shadow_params):
            p.data.copy_(shadow[f"{i:05d}"].to(p.device))
        ema.optimization_step = int(state["ema_optimization_step"])
    accelerator.print(f"resumed from {path} at step {state['step']}")
    return int(state["step"])


def check_dataset(accelerator: Accelerator, run_dir: str | Path, ds: Any, resumed: bool) -> str:
    """Record the dataset fingerprint a run started on; warn when a resumed run or re-export sees other
    data."""
    path = Path(run_dir) / "dataset.json"
    if resumed and path.is_file():
        started = json.loads(path.read_text())["fingerprint"]
        if started != ds.fingerprint:
            accelerator.print("warning: the dataset changed since this run started (fingerprint "
                              f"{started[:12]} -> {ds.fingerprint[:12]}); figures, metrics and export use "
                              "the current data")
        return started
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fingerprint": ds.fingerprint}) + "\n")
    return ds.fingerprint
