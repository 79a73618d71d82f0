"""Resume checkpoints of a training run: checkpoint-{step} folders with a retention limit, and the dataset a run
started on. (The exported pipeline folder, what the service loads, is a separate thing: training/export.py.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from training.config import ConfigError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def save_checkpoint(accelerator: Accelerator, run_dir: str | Path, step: int, limit: int, ema: Any = None) -> Path:
    """Resume state in checkpoint-{step}: accelerate.save_state (model, optimizer, RNG of every process) + EMA."""
    path = Path(run_dir) / "checkpoints" / f"checkpoint-{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Make room first, as the diffusers examples do, so the limit also holds while saving.
        old = [p for s, p in list_checkpoints(run_dir) if s != step]
        for p in old[: max(0, len(old) - (limit - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        state = {"step": step}
        if ema is not None:
            # EMA as safetensors rather than accelerate's pickled custom state: nothing is unpickled on resume.
            save_file({f"{i:05d}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                      str(path / "ema.safetensors"))
            state["ema_optimization_step"] = ema.optimization_step
        (path / "step.json").write_text(json.dumps(state) + "\n")
    accelerator.wait_for_everyone()
    return path


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
        found = list_checkpoints(run_dir)
        if not found:
            accelerator.print(f"--resume latest: no checkpoint in {run_dir}/checkpoints, starting fresh")
            return 0
        path = found[-1][1]
    else:
        path = Path(resume)
        if not (path / "step.json").is_file():
            raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no step.json)")
    accelerator.load_state(str(path))
    state = json.loads((path / "step.json").read_text())
    if ema is not None:
        shadow = load_file(str(path / "ema.safetensors"))
        for i, p in enumerate(ema.shadow_params):
            p.data.copy_(shadow[f"{i:05d}"].to(p.device))
        ema.optimization_step = int(state["ema_optimization_step"])
    accelerator.print(f"resumed from {path} at step {state['step']}")
    return int(state["step"])


def check_dataset(accelerator: Accelerator, run_dir: str | Path, ds: Any, resumed: bool) -> str:
    """Record the dataset fingerprint a run started on; warn when a resumed run or re-export sees other data."""
    path = Path(run_dir) / "dataset.json"
    if resumed and path.is_file():
        started = json.loads(path.read_text())["fingerprint"]
        if started != ds.fingerprint:
            accelerator.print(f"warning: the dataset changed since this run started (fingerprint {started[:12]} -> "
                              f"{ds.fingerprint[:12]}); figures, metrics and export use the current data")
        return started
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fingerprint": ds.fingerprint}) + "\n")
    return ds.fingerprint
