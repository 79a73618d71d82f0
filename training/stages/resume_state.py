"""Resume state as safetensors + JSON, nothing pickled: the trained modules' raw weights, the optimiser's
tensors and hyper-parameters, the mixed-precision grad scaler and every process's RNG states.

This replaces accelerate's save_state/load_state, whose optimizer.bin and random_states_N.pkl are pickles that
load_state reads back with torch.load. Works for one process and for DDP (every rank holds the same weights
and optimiser state; each rank writes its own RNG files). FSDP/DeepSpeed shard their state and are not
supported here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

OPTIMIZER_FILE = "optimizer.safetensors"


def model_file(index: int) -> str:
    return "model.safetensors" if index == 0 else f"model_{index}.safetensors"  # accelerate's names


def rng_files(rank: int) -> tuple[str, str]:
    return f"rng_{rank}.safetensors", f"rng_{rank}.json"


# ---- weights and optimiser (main process) -------------------------------------------------------------
def save_training_state(accelerator, folder: Path) -> dict[str, Any]:
    """Weights and optimiser tensors into safetensors files; returns what goes to JSON (and the file
    names)."""
    files = []
    for i, model in enumerate(accelerator._models):
        save_model(accelerator.unwrap_model(model), str(folder / model_file(i)))
        files.append(model_file(i))
    tensors, optimizers = {}, []
    for i, optimizer in enumerate(accelerator._optimizers):
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entries in sd["state"].items():
            for name, value in entries.items():
                if torch.is_tensor(value):
                    tensors[f"{i}.{pid}.{name}"] = value.detach().cpu().contiguous()  # e.g. exp_avg, step
                else:
                    scalars.setdefault(str(pid), {})[name] = value
        optimizers.append({"param_groups": sd["param_groups"], "scalars": scalars})
    if tensors or optimizers:
        save_file(tensors, str(folder / OPTIMIZER_FILE))
        files.append(OPTIMIZER_FILE)
    scaler = accelerator.scaler.state_dict() if getattr(accelerator, "scaler", None) is not None else None
    return {"files": files, "optimizers": optimizers, "grad_scaler": scaler}


def load_training_state(accelerator, folder: Path, state: dict[str, Any]) -> None:
    for i, model in enumerate(accelerator._models):
        load_model(accelerator.unwrap_model(model), str(folder / model_file(i)), strict=True)
    saved = state.get("optimizers", [])
    if len(saved) != len(accelerator._optimizers):
        raise ValueError(f"{folder}: holds {len(saved)} optimiser state(s), the run has "
                         f"{len(accelerator._optimizers)}")
    tensors = load_file(str(folder / OPTIMIZER_FILE)) if saved else {}
    for i, (optimizer, meta) in enumerate(zip(accelerator._optimizers, saved, strict=True)):
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            opt_index, pid, name = key.split(".", 2)
            if int(opt_index) == i:
                per_param.setdefault(int(pid), {})[name] = value
        for pid, entries in meta["scalars"].items():
            per_param.setdefault(int(pid), {}).update(entries)
        optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    if state.get("grad_scaler") is not None and getattr(accelerator, "scaler", None) is not None:
        accelerator.scaler.load_state_dict(state["grad_scaler"])


# ---- RNG states (every process) ----------------------------------------------------------------------
def save_rng(folder: Path, rank: int) -> None:
    """torch (CPU and every CUDA device), numpy and Python RNG states of this process."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for d, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{d}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))  # MT19937 key, uint32 values
    version, internal, gauss_next = random.getstate()
    tensor_file, json_file = rng_files(rank)
    save_file(tensors, str(folder / tensor_file))
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss_next]}
    (folder / json_file).write_text(json.dumps(meta) + "\n")


def load_rng(folder: Path, rank: int) -> None:
    tensor_file, json_file = rng_files(rank)
    if not (folder / tensor_file).is_file():  # e.g. resumed with more processes than it was saved with
        return
    tensors, meta = load_file(str(folder / tensor_file)), json.loads((folder / json_file).read_text())
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))
