"""Shared training-loop pieces: accelerate setup, per-step RNG, resume checkpoints, JSONL log, figures."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from safetensors.torch import load_file, save_file

from training.config import ConfigError, TrainConfig, write_options

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ---- setup -------------------------------------------------------------------------------------------
def make_accelerator(cfg: TrainConfig, run_dir: str | Path) -> Accelerator:
    """Device, mixed precision and multi-process (DDP; gloo on the CPU) all come from accelerate."""
    project = ProjectConfiguration(project_dir=str(run_dir), automatic_checkpoint_naming=False)
    # Several processes but no CUDA (torchrun / `accelerate launch --multi_gpu` on a CPU box): accelerate only
    # picks its MULTI_CPU (gloo) mode when told cpu=True; its own `--cpu` launcher needs mpirun for >1 process.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=cfg.mixed_precision, project_config=project, cpu=multi_cpu)


def start_run(cfg: TrainConfig, run_dir: str | Path) -> Accelerator:
    """Accelerator for the run, options written once (main process), model init seeded identically everywhere."""
    accelerator = make_accelerator(cfg, run_dir)
    if accelerator.is_main_process:
        write_options(cfg, run_dir)
    torch.manual_seed(cfg.seed)  # model init: identical on every process
    return accelerator


def step_generator(seed: int, step: int, rank: int, stream: int = 0, device: str | torch.device = "cpu"
                   ) -> torch.Generator:
    """A generator keyed by (seed, step, rank, stream): no RNG state is carried between steps, so resume is exact."""
    key = int(np.random.SeedSequence([seed, step, rank, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(key)


def draw_batch(n: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of a batch drawn with replacement across steps (without within a batch where n allows)."""
    if batch_size <= n:
        return torch.randperm(n, generator=gen)[:batch_size]
    return torch.randint(0, n, (batch_size,), generator=gen)


def roll_time(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circularly shift each sample along the last (time) axis by its own amount; x is (N, C, H, W)."""
    w = x.shape[-1]
    cols = (torch.arange(w, device=x.device)[None, :] - shifts[:, None].to(x.device)) % w  # (N, W)
    return torch.gather(x, -1, cols[:, None, None, :].expand_as(x))


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then constant or cosine decay to zero at max_steps."""
    def fn(step: int) -> float:
        if step < cfg.lr_warmup_steps:
            return (step + 1) / (cfg.lr_warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = (step - cfg.lr_warmup_steps) / max(1, cfg.max_steps - cfg.lr_warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return fn


# ---- resume checkpoints ---------------------------------------------------------------------------
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


# ---- logging ---------------------------------------------------------------------------------------------
class JsonlLogger:
    """Append-only metrics log on the main process; on resume, lines past the resumed step are dropped."""

    def __init__(self, path: str | Path, enabled: bool, resume_step: int = 0):
        self.path, self.enabled = Path(path), enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step > 0 and self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
        self.path.write_text("".join(ln + "\n" for ln in kept))

    def log(self, **row: Any) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.is_file() else []


class Throughput:
    """Samples per second since the last reading (all processes together)."""

    def __init__(self) -> None:
        self.t, self.n = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.n += n

    def read(self) -> float:
        now = time.perf_counter()
        rate = self.n / max(now - self.t, 1e-9)
        self.t, self.n = now, 0
        return rate


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- figures -------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(rows: list[dict[str, Any]], keys: list[str], path: str | Path, title: str) -> Path | None:
    """Loss curves from the JSONL rows, raw and smoothed, log-scale."""
    rows = [r for r in rows if any(k in r for k in keys)]
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None and r[key] > 0]
        if not pts:
            continue
        s, v = map(np.asarray, zip(*pts, strict=True))
        ax.plot(s, v, alpha=0.35, lw=0.8)
        k = max(1, len(v) // 20)
        if k > 1:
            ax.plot(s[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid"), lw=1.6)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def first_per_user(labels: np.ndarray, users: list[str], k: int, max_users: int) -> list[tuple[str, list[int]]]:
    """The first k indices of each of the first max_users users (a fixed, reproducible pick for figures)."""
    out = []
    for u, name in enumerate(users[:max_users]):
        idx = np.flatnonzero(labels == u)[:k]
        out.append((name, [int(i) for i in idx]))
    return out


# ---- data ------------------------------------------------------------------------------------------------
def load_split(data: str, split: str | None, channels: int, image_size: int):
    """Dataset split in model space [-1, 1]: returns (x (N, C, H, W) float32 tensor, labels (N,) long, dataset)."""
    from models.normalization import Normalization
    from training.dataset import load_dataset

    ds = load_dataset(data, split=split, channels=channels)
    if len(ds.x) == 0:
        raise ValueError(f"{data}: split {split!r} is empty")
    if tuple(ds.x.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{data}: images are {tuple(ds.x.shape[-2:])} but the preset expects "
                         f"{image_size}x{image_size}; simulate with --size {image_size} or pick another preset")
    norm = Normalization(dyn_range_db=float(ds.meta.get("dyn_range_db", 60.0)))
    x = torch.from_numpy(np.ascontiguousarray(norm.to_model(ds.x)))
    return x, torch.as_tensor(np.asarray(ds.labels), dtype=torch.long), ds
