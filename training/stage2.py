"""What the two stage-2 trainers share around their own loss (train-unet: latent diffusion; train-transformer:
VQ-Diffusion): the frozen stage 1, accelerate set-up, resume, EMA, the optimiser step, logging, checkpoints,
preview grids, and the export of the pipeline folder with EMA weights."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from models import autoencoder as ae
from models.normalization import Normalization
from models.pipeline import DopplerPipeline
from models.presets import Preset
from models.sampling import sample
from training import common
from training.config import ConfigError, Stage2Config, to_dict
from training.preview import spectrogram_grid

VERSION = "0.1.0"


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


def preview_figure(pipe: DopplerPipeline, x_db, picks, cfg: Stage2Config, path: Path, title: str) -> None:
    """Two rows per user, real spectrograms above generated ones (fixed seeds), in dB with the dataset's axes."""
    users = [pipe.user_encoder.index_of(u) for u, _ in picks]
    k = cfg.preview_per_user
    seeds = [1000 * u + j for u in users for j in range(k)]
    gen = sample(pipe, [u for u in users for _ in range(k)], seeds, cfg.num_inference_steps, cfg.guidance_scale)
    rows = []
    for r, (user, idx) in enumerate(picks):
        rows += [(f"{user} real", [x_db[i] for i in idx]), (f"{user} gen", list(gen[r * k:(r + 1) * k].numpy()))]
    path.parent.mkdir(parents=True, exist_ok=True)
    spectrogram_grid(rows, pipe.meta["dataset"]["meta"], path, title=title)


def _plain(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def weights_hash(modules: list[nn.Module]) -> str:
    """Short content hash of the exported weights: the '+local' part of the version."""
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:10]


class Stage2Loop:
    """The shared loop around a stage-2 loss: call set_lr(step), compute the loss, then update(loss, step, batch)."""

    def __init__(self, cfg: Stage2Config, accelerator, model: nn.Module, run_dir: Path, ds) -> None:
        self.cfg, self.accelerator, self.run_dir = cfg, accelerator, run_dir
        main_proc = accelerator.is_main_process
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema = EMAModel(model.parameters(), decay=cfg.ema_decay)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.start = common.resume_from(accelerator, cfg.resume, run_dir, ema=self.ema)
        self.trained_on = common.check_dataset(accelerator, run_dir, ds, resumed=self.start > 0)
        self.ema.to(accelerator.device)
        self.schedule = common.lr_lambda(cfg)
        self.logger = common.JsonlLogger(run_dir / "log.jsonl", main_proc, resume_step=self.start)
        self.shadow = copy.deepcopy(accelerator.unwrap_model(self.model)).eval().requires_grad_(False)  # EMA weights
        self.meter, self.t0, self.last = common.Throughput(), time.perf_counter(), {}
        self.pipe: DopplerPipeline | None = None
        self.x_db, self.picks = None, []

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
        self.picks = common.first_per_user(labels.numpy(), ds.users, cfg.preview_per_user, cfg.users_in_grid)
        return meta

    def steps(self) -> Iterator[int]:
        self.model.train()
        bar = tqdm(total=self.cfg.max_steps, initial=self.start, disable=not self.accelerator.is_main_process,
                   desc=f"train-{self.cfg.stage_name}", dynamic_ncols=True)
        self.bar = bar
        yield from range(self.start, self.cfg.max_steps)
        bar.close()

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
            common.save_checkpoint(acc, self.run_dir, done, cfg.checkpoints_total_limit, ema=self.ema)
        if acc.is_main_process and cfg.image_every and done % cfg.image_every == 0 and done != cfg.max_steps:
            self.ema.copy_to(self.shadow.parameters())
            preview_figure(self.pipe, self.x_db, self.picks, cfg, self.run_dir / "figures" / f"preview-{done:06d}.png",
                           f"real | generated (EMA, step {done}, guidance {cfg.guidance_scale})")

    def export(self, out: Path, loss_title: str, sampler_text: str) -> Path:
        """EMA weights into the shadow, then the pipeline folder (main process); ends the accelerate run."""
        acc = self.accelerator
        acc.wait_for_everyone()
        last = self.last or (common.read_jsonl(self.run_dir / "log.jsonl") or [{}])[-1]  # resume with nothing to do
        if acc.is_main_process:
            self.ema.copy_to(self.shadow.parameters())
            export_pipeline(self.pipe, self.shadow, self.cfg, out, self.run_dir, self.x_db, self.picks, last, self.t0,
                            loss_title, sampler_text)
        acc.wait_for_everyone()
        acc.end_training()
        return out


def export_pipeline(pipe: DopplerPipeline, shadow: nn.Module, cfg, out: Path, run_dir: Path, x_db, picks, last: dict,
                    t0: float, loss_title: str, sampler_text: str) -> None:
    """Final preview, optional fp16 cast, versioned save, loss plot and stage-1 figures: the end of either stage 2."""
    figures = out / "figures"
    stage = cfg.stage_name
    preview_figure(pipe, x_db, picks, cfg, figures / "preview.png",
                   f"real | generated (EMA, step {cfg.max_steps}, guidance {cfg.guidance_scale}, {sampler_text})")
    if cfg.export_dtype == "fp16":
        shadow.half()  # halves the shipped size; DopplerPipeline.load casts back to the serving dtype
    pipe.meta["version"] = f"{VERSION}+{weights_hash([shadow])}"
    pipe.meta["training"]["final"] = last
    pipe.save(out)
    common.plot_losses(common.read_jsonl(run_dir / "log.jsonl"), ["loss"], figures / f"{stage}_loss.png", loss_title)
    vae_figs = Path(cfg.vae).parent / "figures"
    for src, dst in (("recon.png", "vae_recon.png"), ("loss.png", "vae_loss.png")):
        if (vae_figs / src).is_file():
            shutil.copyfile(vae_figs / src, figures / dst)
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    for f in figures.glob("*.png"):
        shutil.copyfile(f, run_dir / "figures" / f.name)
    print(f"train-{stage}: {cfg.max_steps} steps in {time.perf_counter() - t0:.0f} s | loss {last.get('loss', 0):.4f} | "
          f"{pipe.meta['version']} | {pipe.route} | exported {out}")


def export_meta(cfg, preset: Preset, ds, norm: Normalization, route: str = "kl") -> dict:
    """dopplergen.json contents: what the service, evaluator and a reader of the folder need to know."""
    summary_file = Path(cfg.vae).parent / "vae_summary.json"
    options_file = Path(cfg.vae).parent / "training_options.json"
    meta_ds = dict(ds.meta)
    return {
        "name": cfg.name or f"dopplergen-{preset.name}",
        "version": VERSION,  # "+<weights hash>" is appended at export
        "route": route,
        "preset": preset.to_dict(),
        "image_size": [preset.image_size, preset.image_size],
        "channels": preset.channels,
        "normalization": norm.to_dict(),
        "guidance_scale": cfg.guidance_scale,  # serving defaults
        "num_inference_steps": cfg.num_inference_steps,
        "scheduler": "vq-diffusion" if route == "vq-diffusion" else "dpmsolver++",
        "dataset": {
            "fingerprint": ds.fingerprint,
            "path": str(cfg.data),
            "meta": meta_ds,
            "simulate": meta_ds.get("simulate"),  # simulate options keyed by name; None for real data
            "users": list(ds.users),
        },
        "training": {
            cfg.stage_name: to_dict(cfg),
            "vae": json.loads(options_file.read_text()) if options_file.is_file() else None,
            "vae_summary": json.loads(summary_file.read_text()) if summary_file.is_file() else None,
        },
        "evaluation": None,  # filled in by `dopplergen evaluate`
    }


