"""Stage 1: train the AutoencoderKL on spectrograms, measure the latent scaling factor, save the EMA VAE."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.training_utils import EMAModel
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio
from tqdm.auto import tqdm

from models.builders import build_vae
from models.normalization import Normalization
from models.presets import get_preset
from training import common
from training.config import (
    VAEConfig,
    add_config_arguments,
    run_stage,
)
from training.preview import spectrogram_grid


class VAEWithPosterior(nn.Module):
    """Encode, sample, decode in one forward, so DDP sees a forward call and also hands back the KL term."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        post = self.vae.encode(x).latent_dist
        rec = self.vae.decode(post.sample(generator=generator)).sample  # (N, C, H, W)
        return rec, post.kl()  # kl: (N,), summed over latent elements


@torch.no_grad()
def encode_stats(vae: AutoencoderKL, x: torch.Tensor, batch: int, seed: int) -> tuple[float, float]:
    """Mean and std of sampled latents over a whole split: the std gives the scaling factor (Rombach et al. 2022)."""
    gen = torch.Generator("cpu").manual_seed(seed)
    zs = [vae.encode(x[i:i + batch].to(vae.device)).latent_dist.sample(generator=gen).float().cpu()
          for i in range(0, len(x), batch)]
    z = torch.cat(zs)  # (N, 4, h, w)
    return float(z.mean()), float(z.std())


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Decode the posterior mean: the deterministic reconstruction used for PSNR and figures."""
    outs = [vae.decode(vae.encode(x[i:i + batch].to(vae.device)).latent_dist.mode()).sample.float().cpu()
            for i in range(0, len(x), batch)]
    return torch.cat(outs).clamp(-1, 1)


def recon_figure(vae: AutoencoderKL, x: torch.Tensor, picks, norm: Normalization, meta: dict, path: Path,
                 title: str) -> None:
    """Two rows per user, originals above their reconstructions, in dB with the dataset's axes."""
    flat = [i for _, idx in picks for i in idx]
    orig_db, rec_db = norm.to_db(x[flat]).numpy(), norm.to_db(reconstruct(vae, x[flat], 64)).numpy()
    rows, k = [], 0
    for user, idx in picks:
        rows += [(f"{user} real", list(orig_db[k:k + len(idx)])), (f"{user} recon", list(rec_db[k:k + len(idx)]))]
        k += len(idx)
    path.parent.mkdir(parents=True, exist_ok=True)
    spectrogram_grid(rows, meta, path, title=title)


def main(cfg: VAEConfig) -> dict:
    """Train stage 1 and return its summary (also written to <out>/vae_summary.json)."""
    # ---- setup ---------------------------------------------------------------------------------------
    run_dir = Path(cfg.out)
    accelerator = common.start_run(cfg, run_dir)
    device, rank, main_proc = accelerator.device, accelerator.process_index, accelerator.is_main_process

    # ---- data ----------------------------------------------------------------------------------------
    preset = get_preset(cfg.preset, channels=cfg.channels)
    x, labels, ds = common.load_split(cfg.data, "train", cfg.channels, preset.image_size)  # (N, C, H, W) in [-1, 1]
    try:
        x_test, labels_test, _ = common.load_split(cfg.data, "test", cfg.channels, preset.image_size)
    except (ValueError, KeyError) as err:
        accelerator.print(f"no test split ({err}); reporting PSNR on the train split only")
        x_test, labels_test = None, None
    norm = Normalization(dyn_range_db=float(ds.meta.get("dyn_range_db", 60.0)))
    fig_x, fig_labels = (x_test, labels_test) if x_test is not None else (x, labels)
    picks = common.first_per_user(fig_labels.numpy(), ds.users, 4, cfg.users_in_grid)

    # ---- model, optimiser, EMA -------------------------------------------------------------------------
    model = VAEWithPosterior(build_vae(preset)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMAModel(model.vae.parameters(), decay=cfg.ema_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    start = common.resume_from(accelerator, cfg.resume, run_dir, ema=ema)
    trained_on = common.check_dataset(accelerator, run_dir, ds, resumed=start > 0)
    ema.to(device)
    schedule = common.lr_lambda(cfg)
    logger = common.JsonlLogger(run_dir / "log.jsonl", main_proc, resume_step=start)
    eval_vae = build_vae(preset).to(device).eval().requires_grad_(False)  # holds EMA weights for figures/export

    # ---- train -----------------------------------------------------------------------------------------
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not main_proc, desc="train-vae", dynamic_ncols=True)
    meter, t0, last = common.Throughput(), time.perf_counter(), {}
    for step in range(start, cfg.max_steps):
        gen = common.step_generator(cfg.seed, step, rank)
        xb = x[common.draw_batch(len(x), cfg.batch_size, gen)]  # (B, C, H, W)
        if cfg.time_shift:
            xb = common.roll_time(xb, torch.randint(0, xb.shape[-1], (len(xb),), generator=gen))
        xb = xb.to(device)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * schedule(step)  # stateless schedule: nothing to restore on resume
        with accelerator.autocast():
            rec, kl = model(xb, gen)
        rec = rec.float()
        l1, l2 = (rec - xb).abs().mean(), (rec - xb).pow(2).mean()
        kl = kl.float().mean() / xb[0].numel()  # per pixel, so kl_weight means what it means in Stable Diffusion
        loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.kl_weight * kl
        accelerator.backward(loss)
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).vae.parameters())
        meter.add(len(xb) * accelerator.num_processes)
        done = step + 1
        bar.update(1)

        # ---- log -------------------------------------------------------------------------------------
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            vals = accelerator.reduce(torch.stack([loss, l1, l2, kl]).detach(), reduction="mean").tolist()
            last = dict(step=done, loss=vals[0], l1=vals[1], l2=vals[2], kl=vals[3], lr=cfg.lr * schedule(step),
                        samples_per_s=meter.read(), num_processes=accelerator.num_processes,
                        elapsed_s=time.perf_counter() - t0)
            logger.log(**last)
            bar.set_postfix(loss=f"{vals[0]:.4f}", l1=f"{vals[1]:.4f}")

        # ---- checkpoint and figures ----------------------------------------------------------------------
        if done % cfg.checkpointing_steps == 0 or done == cfg.max_steps:
            common.save_checkpoint(accelerator, run_dir, done, cfg.checkpoints_total_limit, ema=ema)
        if main_proc and cfg.image_every and done % cfg.image_every == 0 and done != cfg.max_steps:
            ema.copy_to(eval_vae.parameters())
            recon_figure(eval_vae, fig_x, picks, norm, ds.meta, run_dir / "figures" / f"recon-{done:06d}.png",
                         f"VAE (EMA) reconstructions, step {done}")
    bar.close()

    # ---- export: EMA weights, measured scaling factor, metrics, figures -----------------------------------
    accelerator.wait_for_everyone()
    summary: dict = {}
    last = last or (common.read_jsonl(run_dir / "log.jsonl") or [{}])[-1]  # a resume with nothing left to do
    if main_proc:
        ema.copy_to(eval_vae.parameters())
        mean, std = encode_stats(eval_vae, x, cfg.eval_batch_size, cfg.seed)
        eval_vae.register_to_config(scaling_factor=1.0 / std)  # measured on the train split, never hard-coded
        eval_vae.save_pretrained(run_dir / "vae", safe_serialization=True)
        psnr = {}
        for split, xs in (("train", x), ("test", x_test)):
            if xs is not None:
                # model space spans 2 units = dyn_range_db dB, so this equals PSNR over the dB images.
                psnr[split] = float(peak_signal_noise_ratio(reconstruct(eval_vae, xs, cfg.eval_batch_size), xs,
                                                            data_range=2.0))
        summary = dict(steps=cfg.max_steps, scaling_factor=1.0 / std, latent_mean=mean, latent_std=std,
                       psnr_db=psnr, final=last, dataset_fingerprint=ds.fingerprint,
                       trained_on_fingerprint=trained_on,
                       peak_rss_mb=common.peak_rss_mb())
        (run_dir / "vae_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        recon_figure(eval_vae, fig_x, picks, norm, ds.meta, run_dir / "figures" / "recon.png",
                     f"VAE (EMA) reconstructions, {'test' if x_test is not None else 'train'} split, "
                     f"step {cfg.max_steps}, PSNR {psnr.get('test', psnr['train']):.1f} dB")
        common.plot_losses(common.read_jsonl(run_dir / "log.jsonl"), ["loss", "l1", "kl"],
                           run_dir / "figures" / "loss.png", "train-vae")
        print(f"train-vae: {cfg.max_steps} steps in {time.perf_counter() - t0:.0f} s | loss {last.get('loss', 0):.4f} | "
              f"PSNR " + ", ".join(f"{k} {v:.2f} dB" for k, v in psnr.items()) +
              f" | scaling_factor {1.0 / std:.4f} | saved {run_dir / 'vae'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, VAEConfig)


def run(args: argparse.Namespace) -> int:
    return run_stage("vae", args, main, "data", "out")
