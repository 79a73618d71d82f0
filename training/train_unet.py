"""Stage 2: user-conditioned latent diffusion on frozen-VAE latents; exports the pipeline folder with EMA weights."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr
from torch import nn
from tqdm.auto import tqdm

from models.builders import build_unet, build_user_encoder
from models.normalization import Normalization
from models.pipeline import DopplerPipeline
from models.presets import Preset, get_preset
from models.sampling import sample
from training import common
from training.config import (
    ConfigError,
    UNetConfig,
    add_config_arguments,
    run_stage,
    to_dict,
)
from training.preview import spectrogram_grid

VERSION = "0.1.0"


class Denoiser(nn.Module):
    """UNet + user encoder as one module: one DDP wrapper, one optimiser, one EMA."""

    def __init__(self, preset: Preset, users: list[str]):
        super().__init__()
        self.unet = build_unet(preset)
        self.user_encoder = build_user_encoder(preset, users)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, user_idx: torch.Tensor) -> torch.Tensor:
        return self.unet(z_t, t, encoder_hidden_states=self.user_encoder(user_idx)).sample  # (N, 4, h, w)


@torch.no_grad()
def cache_latents(vae: AutoencoderKL, x: torch.Tensor, shifts: list[int], batch: int = 64):
    """Posterior mean and std of every image at every circular time shift: (S, N, 4, h, w) each, on the CPU."""
    means, stds = [], []
    for s in shifts:
        xs = torch.roll(x, shifts=s, dims=-1)
        m, d = [], []
        for i in range(0, len(xs), batch):
            post = vae.encode(xs[i:i + batch].to(vae.device)).latent_dist
            m.append(post.mean.float().cpu())
            d.append(post.std.float().cpu())
        means.append(torch.cat(m))
        stds.append(torch.cat(d))
    return torch.stack(means), torch.stack(stds)


def preview_figure(pipe: DopplerPipeline, x_db, picks, cfg: UNetConfig, path: Path, title: str) -> None:
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


def main(cfg: UNetConfig) -> Path:
    """Train stage 2 and export the pipeline folder to cfg.out."""
    # ---- setup ---------------------------------------------------------------------------------------
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.with_name(out.name + "-run")
    accelerator = common.start_run(cfg, run_dir)
    device, rank, main_proc = accelerator.device, accelerator.process_index, accelerator.is_main_process

    # ---- data: frozen VAE, latents cached in memory ----------------------------------------------------
    preset = get_preset(cfg.preset, channels=cfg.channels)
    if cfg.prediction_type:
        preset = preset.with_overrides(prediction_type=cfg.prediction_type)
    x, labels, ds = common.load_split(cfg.data, "train", cfg.channels, preset.image_size)  # (N, C, H, W)
    norm = Normalization(dyn_range_db=float(ds.meta.get("dyn_range_db", 60.0)))
    vae = AutoencoderKL.from_pretrained(cfg.vae, use_safetensors=True, low_cpu_mem_usage=False)
    vae.to(device).eval().requires_grad_(False)
    expect = preset.vae_config()
    for key in ("in_channels", "latent_channels", "block_out_channels"):
        if _plain(vae.config[key]) != _plain(expect[key]):
            raise ConfigError(f"VAE {cfg.vae} has {key}={vae.config[key]}, preset {preset.name} expects {expect[key]}")
    scaling = float(vae.config.scaling_factor)
    if scaling == 1.0:
        accelerator.print("warning: VAE scaling_factor is 1.0; was it measured by train-vae?")
    w = x.shape[-1]
    shifts = [round(i * w / cfg.latent_shifts) for i in range(cfg.latent_shifts)] if cfg.time_shift else [0]
    lat_mean, lat_std = cache_latents(vae, x, shifts)  # (S, N, 4, h, w)
    accelerator.print(f"cached latents {tuple(lat_mean.shape)} of {len(ds.users)} users, scaling {scaling:.4f}")

    # ---- model, noise schedule, optimiser, EMA ----------------------------------------------------------
    model = Denoiser(preset, ds.users).to(device)
    null_user = model.user_encoder.null_index
    noise_sched = DDPMScheduler(**preset.scheduler_config())
    num_t = noise_sched.config.num_train_timesteps
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    start = common.resume_from(accelerator, cfg.resume, run_dir, ema=ema)
    trained_on = common.check_dataset(accelerator, run_dir, ds, resumed=start > 0)
    ema.to(device)
    schedule = common.lr_lambda(cfg)
    logger = common.JsonlLogger(run_dir / "log.jsonl", main_proc, resume_step=start)
    shadow = copy.deepcopy(accelerator.unwrap_model(model)).eval().requires_grad_(False)  # EMA weights go here
    meta = export_meta(cfg, preset, ds, norm)
    meta["dataset"]["trained_on_fingerprint"] = trained_on  # differs from "fingerprint" only if data changed
    pipe = DopplerPipeline(vae, shadow.unet, shadow.user_encoder, dict(noise_sched.config), meta)
    picks = common.first_per_user(labels.numpy(), ds.users, cfg.preview_per_user, cfg.users_in_grid)
    x_db = norm.to_db(x).numpy()  # (N, C, H, W)

    # ---- train -----------------------------------------------------------------------------------------
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not main_proc, desc="train-unet", dynamic_ncols=True)
    meter, t0, last = common.Throughput(), time.perf_counter(), {}
    for step in range(start, cfg.max_steps):
        gen = common.step_generator(cfg.seed, step, rank)
        idx = common.draw_batch(len(x), cfg.batch_size, gen)
        b = len(idx)
        s = torch.randint(0, len(shifts), (b,), generator=gen)
        eps_lat = torch.randn((b, *lat_mean.shape[2:]), generator=gen)
        z0 = (lat_mean[s, idx] + lat_std[s, idx] * eps_lat) * scaling  # (B, 4, h, w): a posterior sample
        user = labels[idx].clone()
        user[torch.rand(b, generator=gen) < cfg.null_user_prob] = null_user  # classifier-free guidance dropout
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, num_t, (b,), generator=gen)
        z0, noise, t, user = z0.to(device), noise.to(device), t.to(device), user.to(device)
        z_t = noise_sched.add_noise(z0, noise, t)
        v_pred = noise_sched.config.prediction_type == "v_prediction"
        target = noise_sched.get_velocity(z0, noise, t) if v_pred else noise
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * schedule(step)  # stateless schedule: nothing to restore on resume
        with accelerator.autocast():
            pred = model(z_t, t, user)
        per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
        if cfg.snr_gamma > 0:
            # Min-SNR-gamma (Hang et al. 2023): cap the weight of easy, low-noise steps; v-target divides by snr+1.
            snr = compute_snr(noise_sched, t)
            per_sample = per_sample * snr.clamp(max=cfg.snr_gamma) / (snr + 1 if v_pred else snr)
        loss = per_sample.mean()
        accelerator.backward(loss)
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())
        meter.add(b * accelerator.num_processes)
        done = step + 1
        bar.update(1)

        # ---- log -------------------------------------------------------------------------------------
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            val = float(accelerator.reduce(loss.detach(), reduction="mean"))
            last = dict(step=done, loss=val, lr=cfg.lr * schedule(step), samples_per_s=meter.read(),
                        num_processes=accelerator.num_processes, elapsed_s=time.perf_counter() - t0)
            logger.log(**last)
            bar.set_postfix(loss=f"{val:.4f}")

        # ---- checkpoint and previews --------------------------------------------------------------------
        if done % cfg.checkpointing_steps == 0 or done == cfg.max_steps:
            common.save_checkpoint(accelerator, run_dir, done, cfg.checkpoints_total_limit, ema=ema)
        if main_proc and cfg.image_every and done % cfg.image_every == 0 and done != cfg.max_steps:
            ema.copy_to(shadow.parameters())
            preview_figure(pipe, x_db, picks, cfg, run_dir / "figures" / f"preview-{done:06d}.png",
                           f"real | generated (EMA, step {done}, guidance {cfg.guidance_scale})")
    bar.close()

    # ---- export the pipeline folder (EMA weights) -----------------------------------------------------------
    accelerator.wait_for_everyone()
    last = last or (common.read_jsonl(run_dir / "log.jsonl") or [{}])[-1]  # a resume with nothing left to do
    if main_proc:
        ema.copy_to(shadow.parameters())
        figures = out / "figures"
        preview_figure(pipe, x_db, picks, cfg, figures / "preview.png",
                       f"real | generated (EMA, step {cfg.max_steps}, guidance {cfg.guidance_scale}, "
                       f"{cfg.num_inference_steps} DPM-Solver++ steps)")
        if cfg.export_dtype == "fp16":
            shadow.half()  # halves the shipped size; DopplerPipeline.load casts back to the serving dtype
        meta["version"] = f"{VERSION}+{weights_hash([shadow])}"
        meta["training"]["final"] = last
        pipe.save(out)
        common.plot_losses(common.read_jsonl(run_dir / "log.jsonl"), ["loss"], figures / "unet_loss.png",
                           "train-unet (Min-SNR weighted)" if cfg.snr_gamma else "train-unet")
        vae_figs = Path(cfg.vae).parent / "figures"
        for src, dst in (("recon.png", "vae_recon.png"), ("loss.png", "vae_loss.png")):
            if (vae_figs / src).is_file():
                shutil.copyfile(vae_figs / src, figures / dst)
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        for f in figures.glob("*.png"):
            shutil.copyfile(f, run_dir / "figures" / f.name)
        print(f"train-unet: {cfg.max_steps} steps in {time.perf_counter() - t0:.0f} s | loss {last.get('loss', 0):.4f} | "
              f"{meta['version']} | exported {out}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def export_meta(cfg: UNetConfig, preset: Preset, ds, norm: Normalization) -> dict:
    """dopplergen.json contents: what the service, evaluator and a reader of the folder need to know."""
    summary_file = Path(cfg.vae).parent / "vae_summary.json"
    options_file = Path(cfg.vae).parent / "training_options.json"
    meta_ds = dict(ds.meta)
    return {
        "name": cfg.name or f"dopplergen-{preset.name}",
        "version": VERSION,  # "+<weights hash>" is appended at export
        "route": "kl",
        "preset": preset.to_dict(),
        "image_size": [preset.image_size, preset.image_size],
        "channels": preset.channels,
        "normalization": norm.to_dict(),
        "guidance_scale": cfg.guidance_scale,  # serving defaults
        "num_inference_steps": cfg.num_inference_steps,
        "scheduler": "dpmsolver++",
        "dataset": {
            "fingerprint": ds.fingerprint,
            "path": str(cfg.data),
            "meta": meta_ds,
            "simulate": meta_ds.get("simulate"),  # simulate options keyed by name; None for real data
            "users": list(ds.users),
        },
        "training": {
            "unet": to_dict(cfg),
            "vae": json.loads(options_file.read_text()) if options_file.is_file() else None,
            "vae_summary": json.loads(summary_file.read_text()) if summary_file.is_file() else None,
        },
        "evaluation": None,  # filled in by `dopplergen evaluate`
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, UNetConfig)


def run(args: argparse.Namespace) -> int:
    return run_stage("unet", args, main, "data", "out", "vae")
