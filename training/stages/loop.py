"""The shared training loop: accelerate set-up, per-step RNG, learning-rate schedule and data of both stages, and
`Stage2Loop`, the optimiser/EMA/log/checkpoint loop that train-unet and train-transformer wrap around their own loss
(train-vae runs its own loop with the same pieces)."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from models import autoencoder as ae
from models.normalization import Normalization
from models.pipeline import DopplerPipeline
from models.presets import Preset
from training.config import ConfigError, Stage2Config, TrainConfig, write_options
from training.data.dataset import load_dataset
from training.stages import checkpoints
from training.stages.export import export_meta, export_pipeline, preview_figure
from training.stages.logs import JsonlLogger, Throughput, read_jsonl


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


# ---- data ------------------------------------------------------------------------------------------------
def load_split(data: str, split: str | None, channels: int, image_size: int):
    """Dataset split in model space [-1, 1]: returns (x (N, C, H, W) float32 tensor, labels (N,) long, dataset)."""
    ds = load_dataset(data, split=split, channels=channels)
    if len(ds.x) == 0:
        raise ValueError(f"{data}: split {split!r} is empty")
    if tuple(ds.x.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{data}: images are {tuple(ds.x.shape[-2:])} but the preset expects "
                         f"{image_size}x{image_size}; simulate with --size {image_size} or pick another preset")
    norm = Normalization.from_meta(ds.meta)
    x = torch.from_numpy(np.ascontiguousarray(norm.to_model(ds.x)))
    return x, torch.as_tensor(np.asarray(ds.labels), dtype=torch.long), ds


def first_per_user(labels: np.ndarray, users: list[str], k: int, max_users: int) -> list[tuple[str, list[int]]]:
    """The first k indices of each of the first max_users users (a fixed, reproducible pick for figures)."""
    out = []
    for u, name in enumerate(users[:max_users]):
        idx = np.flatnonzero(labels == u)[:k]
        out.append((name, [int(i) for i in idx]))
    return out


# ---- stage 2 -------------------------------------------------------------------------------------------
def load_frozen_autoencoder(cfg, preset: Preset, device, print_fn) -> ae.Autoencoder:
    """The trained stage 1 (either class), frozen, checked against the preset; warns on an unmeasured scaling."""
    vae = ae.load_autoencoder(cfg.vae)
    vae.to(device).eval().requires_grad_(False)
    expect = preset.vq_config() if ae.is_vq(vae) else preset.vae_config()
    for key in ("in_channels", "latent_channels", "block_out_channels"):
        if _plain(vae.config[key]) != _plain(expect[key]):
            raise ConfigError(f"autoencoder {cfg.vae} has {key}={vae.config[key]}, preset {preset.name} expects "
                              f"{expect[key]}")
    if float(vae.config.scaling_factor) == 1.0:
        print_fn("warning: autoencoder scaling_factor is 1.0; was it measured by train-vae?")
    return vae


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


class Stage2Loop:
    """The shared loop around a stage-2 loss: call set_lr(step), compute the loss, then update(loss, step, batch)."""

    def __init__(self, cfg: Stage2Config, accelerator, model: nn.Module, run_dir: Path, ds) -> None:
        self.cfg, self.accelerator, self.run_dir = cfg, accelerator, run_dir
        main_proc = accelerator.is_main_process
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema = EMAModel(model.parameters(), decay=cfg.ema_decay)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.start = checkpoints.resume_from(accelerator, cfg.resume, run_dir, ema=self.ema)
        self.trained_on = checkpoints.check_dataset(accelerator, run_dir, ds, resumed=self.start > 0)
        self.ema.to(accelerator.device)
        self.schedule = lr_lambda(cfg)
        self.logger = JsonlLogger(run_dir / "log.jsonl", main_proc, resume_step=self.start)
        self.shadow = copy.deepcopy(accelerator.unwrap_model(self.model)).eval().requires_grad_(False)  # EMA weights
        self.meter, self.t0, self.last = Throughput(), time.perf_counter(), {}
        self.pipe: DopplerPipeline | None = None
        self.x_db, self.picks, self.owners = None, [], []

    def attach(self, vae: ae.Autoencoder, network: str, scheduler_config: dict, preset: Preset, ds,
               norm: Normalization, x: torch.Tensor, labels: torch.Tensor, route: str) -> dict:
        """Build the pipeline around the EMA shadow (its `network` attribute is the denoiser) and pick the real
        spectrograms of the preview grids; returns the pipeline's metadata for the trainer to add to."""
        cfg = self.cfg
        meta = export_meta(cfg, preset, ds, norm, route)
        meta["dataset"]["trained_on_fingerprint"] = self.trained_on  # differs from "fingerprint" only if data changed
        self.pipe = DopplerPipeline(vae, getattr(self.shadow, network), self.shadow.user_encoder,
                                    dict(scheduler_config), meta)
        self.x_db = norm.to_db(x).numpy()  # (N, C, H, W)
        self.owners = [ds.users[int(i)] for i in labels]  # whose each recording is (the texture bank's owners)
        self.picks = first_per_user(labels.numpy(), ds.users, cfg.preview_per_user, cfg.users_in_grid)
        return meta

    def steps(self) -> Iterator[int]:
        self.model.train()
        bar = tqdm(total=self.cfg.max_steps, initial=self.start, disable=not self.accelerator.is_main_process,
                   desc=f"train-{self.cfg.stage_name}", dynamic_ncols=True)
        self.bar = bar
        yield from range(self.start, self.cfg.max_steps)
        bar.close()

    def draw(self, step: int, n: int) -> tuple[torch.Generator, torch.Tensor]:
        """The generator of (seed, step, rank) and the batch's indices into the n cached recordings."""
        gen = step_generator(self.cfg.seed, step, self.accelerator.process_index)
        return gen, draw_batch(n, self.cfg.batch_size, gen)

    def set_lr(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * self.schedule(step)  # stateless schedule: nothing to restore on resume

    def update(self, loss: torch.Tensor, step: int, batch: int) -> None:
        cfg, acc = self.cfg, self.accelerator
        acc.backward(loss)
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(acc.unwrap_model(self.model).parameters())
        self.meter.add(batch * acc.num_processes)
        done = step + 1
        self.bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            val = float(acc.reduce(loss.detach(), reduction="mean"))
            self.last = dict(step=done, loss=val, lr=cfg.lr * self.schedule(step), samples_per_s=self.meter.read(),
                             num_processes=acc.num_processes, elapsed_s=time.perf_counter() - self.t0)
            self.logger.log(**self.last)
            self.bar.set_postfix(loss=f"{val:.4f}")
        if done % cfg.checkpointing_steps == 0 or done == cfg.max_steps:
            checkpoints.save_checkpoint(acc, self.run_dir, done, cfg.checkpoints_total_limit, ema=self.ema)
        if acc.is_main_process and cfg.image_every and done % cfg.image_every == 0 and done != cfg.max_steps:
            self.ema.copy_to(self.shadow.parameters())
            preview_figure(self.pipe, self.x_db, self.picks, cfg, self.run_dir / "figures" / f"preview-{done:06d}.png",
                           f"real | generated (EMA, step {done}, guidance {cfg.guidance_scale})")

    def export(self, out: Path, loss_title: str, sampler_text: str) -> Path:
        """EMA weights into the shadow, then the pipeline folder (main process); ends the accelerate run."""
        acc = self.accelerator
        acc.wait_for_everyone()
        last = self.last or (read_jsonl(self.run_dir / "log.jsonl") or [{}])[-1]  # resume with nothing to do
        if acc.is_main_process:
            self.ema.copy_to(self.shadow.parameters())
            export_pipeline(self.pipe, self.shadow, self.cfg, out, self.run_dir, self.x_db, self.picks, last, self.t0,
                            loss_title, sampler_text, self.owners)
        acc.wait_for_everyone()
        acc.end_training()
        return out
