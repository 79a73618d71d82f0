"""The training loop of every stage: accelerate set-up, per-step RNG, learning-rate schedule and data, and
`TrainLoop`, the optimiser/EMA/log/checkpoint/figure loop that train-vae, train-unet and train-transformer
each wrap around their own loss."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.training_utils import EMAModel
from torch import nn

from models import autoencoder as ae
from models.normalization import Normalization
from models.presets import Preset
from training.config import ConfigError, TrainConfig, write_options
from training.data.dataset import load_dataset
from training.progress import progress
from training.stages import checkpoints
from training.stages.logs import JsonlLogger, Throughput, read_jsonl


# ---- setup -------------------------------------------------------------------------------------------
def make_accelerator(cfg: TrainConfig, run_dir: str | Path) -> Accelerator:
    """Device, mixed precision and multi-process (DDP; gloo on the CPU) all come from accelerate."""
    project = ProjectConfiguration(project_dir=str(run_dir), automatic_checkpoint_naming=False)
    # Several processes but no CUDA (torchrun / `accelerate launch --multi_gpu` on a CPU box): accelerate only
    # picks its MULTI_CPU (gloo) mode when told cpu=True; its own `--cpu` launcher needs mpirun for >1
    # process.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(mixed_precision=cfg.mixed_precision, project_config=project, cpu=multi_cpu)


def start_run(cfg: TrainConfig, run_dir: str | Path) -> Accelerator:
    """Accelerator for the run, options written once (main process), model init seeded identically
    everywhere."""
    accelerator = make_accelerator(cfg, run_dir)
    if accelerator.is_main_process:
        write_options(cfg, run_dir)
    torch.manual_seed(cfg.seed)  # model init: identical on every process
    return accelerator


def step_generator(seed: int, step: int, rank: int, stream: int = 0, device: str | torch.device = "cpu"
                   ) -> torch.Generator:
    """A generator keyed by (seed, step, rank, stream): no RNG state is carried between steps, so resume is
    exact."""
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


# ---- data ------------------------------------------------------------------------------------------------
def load_split(data: str, split: str | None, channels: int, image_size: int):
    """Dataset split in model space [-1, 1]: returns (x (N, C, H, W) float32 tensor, labels (N,) long,
    dataset)."""
    ds = load_dataset(data, split=split, channels=channels)
    if len(ds.x) == 0:
        raise ValueError(f"{data}: split {split!r} is empty")
    if tuple(ds.x.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{data}: images are {tuple(ds.x.shape[-2:])} but the preset expects "
                         f"{image_size}x{image_size}; pick the preset of the data's size, or re-import the "
                         f"data with `dopplergen import ... --size {image_size}`")
    norm = Normalization.from_meta(ds.meta)
    x = torch.from_numpy(np.ascontiguousarray(norm.to_model(ds.x)))
    return x, torch.as_tensor(np.asarray(ds.labels), dtype=torch.long), ds


def first_per_user(
    labels: np.ndarray, users: list[str], k: int, max_users: int
) -> list[tuple[str, list[int]]]:
    """The first k indices of each of the first max_users users (a fixed, reproducible pick for figures)."""
    out = []
    for u, name in enumerate(users[:max_users]):
        idx = np.flatnonzero(labels == u)[:k]
        out.append((name, [int(i) for i in idx]))
    return out


# ---- stage 2 set-up ----------------------------------------------------------------------------------------
def load_frozen_autoencoder(cfg, preset: Preset, device, print_fn) -> ae.Autoencoder:
    """The trained stage 1 (either class), frozen, checked against the preset; warns on an unmeasured
    scaling."""
    vae = ae.load_autoencoder(cfg.vae)
    vae.to(device).eval().requires_grad_(False)
    expect = preset.vq_config() if ae.is_vq(vae) else preset.vae_config()
    for key in ("in_channels", "latent_channels", "block_out_channels"):
        if _plain(vae.config[key]) != _plain(expect[key]):
            raise ConfigError(f"autoencoder {cfg.vae} has {key}={vae.config[key]}, preset {preset.name} "
                              f"expects {expect[key]}")
    if float(vae.config.scaling_factor) == 1.0:
        print_fn("warning: autoencoder scaling_factor is 1.0; was it measured by train-vae?")
    return vae


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


class TrainLoop:
    """The loop around any stage's loss: AdamW, an EMA of the weights, the stateless learning-rate schedule,
    JSONL log and progress bar, resume checkpoints and figures every cfg.image_every steps.

    A trainer iterates `steps()` and, per step, takes its generator and batch from `draw(step, n)`, calls
    `set_lr(step)`, computes its loss and ends the step with `update(loss, step, batch)`. After the loop,
    `finish()` puts the EMA weights into `shadow` and returns the last log row; `close()` ends the run.

    `ema_of`: the attribute of the model whose weights the EMA tracks and the shadow holds ("" = the whole
    model; train-vae's "vae": the autoencoder inside its training wrapper). `postfix`: log keys shown in the
    progress bar besides the loss. Two hooks a trainer may set: `after_optimizer_step(step)` runs after each
    optimiser step, before the EMA step (train-vae's codebook reset); `figure(done)` runs every
    cfg.image_every steps on the main process, with the EMA weights in `shadow`.
    """

    def __init__(self, cfg: TrainConfig, accelerator: Accelerator, model: nn.Module, run_dir: str | Path, ds,
                 *,
                 ema_of: str = "", desc: str = "", postfix: tuple[str, ...] = ()) -> None:
        self.cfg, self.accelerator, self.run_dir = cfg, accelerator, Path(run_dir)
        self.ema_of, self.postfix = ema_of, postfix
        self.desc = desc or f"train-{cfg.stage_name}"
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema = EMAModel((getattr(model, ema_of) if ema_of else model).parameters(), decay=cfg.ema_decay)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.start = checkpoints.resume_from(accelerator, cfg.resume, self.run_dir, ema=self.ema)
        self.trained_on = checkpoints.check_dataset(accelerator, self.run_dir, ds, resumed=self.start > 0)
        self.ema.to(accelerator.device)
        self.schedule = lr_lambda(cfg)
        self.logger = JsonlLogger(self.run_dir / "log.jsonl", accelerator.is_main_process,
                                  resume_step=self.start)
        self.shadow = copy.deepcopy(self.tracked()).eval().requires_grad_(False)  # holds the EMA weights
        self.meter, self.t0, self.last = Throughput(), time.perf_counter(), {}
        self.after_optimizer_step: Callable[[int], None] | None = None
        self.figure: Callable[[int], None] | None = None
        self._bar: Any = None

    def tracked(self) -> nn.Module:
        """The (unwrapped) module whose weights the EMA tracks."""
        model = self.accelerator.unwrap_model(self.model)
        return getattr(model, self.ema_of) if self.ema_of else model

    @property
    def bar(self) -> Any:
        """The progress bar, created on first use (so update() works outside steps() too)."""
        if self._bar is None:
            self._bar = progress(total=self.cfg.max_steps, initial=self.start, desc=self.desc,
                                 dynamic_ncols=True, disable=not self.accelerator.is_main_process)
        return self._bar

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def steps(self) -> Iterator[int]:
        self.model.train()
        self.bar.refresh()  # shown from the first step
        yield from range(self.start, self.cfg.max_steps)
        self.close_bar()

    def draw(self, step: int, n: int) -> tuple[torch.Generator, torch.Tensor]:
        """The generator of (seed, step, rank) and the batch's indices into the n cached recordings."""
        gen = step_generator(self.cfg.seed, step, self.accelerator.process_index)
        return gen, draw_batch(n, self.cfg.batch_size, gen)

    def set_lr(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            # stateless schedule: nothing to restore on resume
            group["lr"] = self.cfg.lr * self.schedule(step)

    def update(self, loss: torch.Tensor, step: int, batch: int, *,
               terms: dict[str, torch.Tensor] | None = None,
               stats: Callable[[], dict] | None = None) -> None:
        """Backward, clip, optimiser and EMA step; then log, checkpoint and figure when due. `terms`: more
        scalar tensors to log (averaged over processes like the loss); `stats()`: more log fields, computed
        only when the step is logged."""
        cfg, acc = self.cfg, self.accelerator
        acc.backward(loss)
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.after_optimizer_step is not None:
            self.after_optimizer_step(step)
        self.ema.step(self.tracked().parameters())
        self.meter.add(batch * acc.num_processes)
        done = step + 1
        self.bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            self._log(done, step, loss, terms or {}, stats)
        if done % cfg.checkpointing_steps == 0 or done == cfg.max_steps:
            checkpoints.save_checkpoint(acc, self.run_dir, done, cfg.checkpoints_total_limit, ema=self.ema)
        if (self.figure is not None and acc.is_main_process and cfg.image_every
                and done % cfg.image_every == 0 and done != cfg.max_steps):
            self.ema.copy_to(self.shadow.parameters())
            self.figure(done)

    def _log(self, done: int, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor], stats) -> None:
        acc = self.accelerator
        vals = acc.reduce(torch.stack([loss, *terms.values()]).detach(), reduction="mean").tolist()
        self.last = dict(step=done, loss=vals[0], **dict(zip(terms, vals[1:], strict=True)),
                         lr=self.cfg.lr * self.schedule(step), samples_per_s=self.meter.read(),
                         num_processes=acc.num_processes, elapsed_s=time.perf_counter() - self.t0)
        if stats is not None:
            self.last.update(stats())
        self.logger.log(**self.last)
        self.bar.set_postfix(loss=f"{vals[0]:.4f}", **{k: f"{self.last[k]:.4g}" for k in self.postfix
                                                        if k in self.last})

    def finish(self) -> dict:
        """After the last step: EMA weights into the shadow (main process). Returns the last log row (read
        back from the log when a resumed run had nothing left to do)."""
        self.close_bar()
        self.accelerator.wait_for_everyone()
        last = self.last or (read_jsonl(self.run_dir / "log.jsonl") or [{}])[-1]
        if self.accelerator.is_main_process:
            self.ema.copy_to(self.shadow.parameters())
        return last

    def close(self) -> None:
        """Ends the accelerate run, once every process is done (with the export too)."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
