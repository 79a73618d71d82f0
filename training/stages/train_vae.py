"""Stage 1: train the autoencoder (AutoencoderKL, or VQModel for the comparison route), measure the latent
scaling factor, save the EMA model."""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
from accelerate.utils import broadcast
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from models import autoencoder as ae
from models.builders import build_autoencoder
from models.normalization import Normalization
from models.presets import get_preset
from training.cli_types import add_threads_argument, set_threads
from training.config import (
    ConfigError,
    VAEConfig,
    add_config_arguments,
    run_stage,
)
from training.eval import plots
from training.eval.plots import spectrogram_grid
from training.stages import logs
from training.stages.loop import TrainLoop, first_per_user, load_split, roll_time, start_run, step_generator


class VAEWithPosterior(nn.Module):
    """Encode, regularise, decode in one forward, so DDP sees a forward call; works for both autoencoders.

    Returns the reconstruction, the regulariser (KL per latent element, or the VQ codebook + commitment loss)
    and, for a VQModel, the chosen code indices (for the usage statistics).
    """

    def __init__(self, vae: ae.Autoencoder):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, generator: torch.Generator):
        if ae.is_vq(self.vae):
            h = self.vae.encode(x).latents
            z_q, q_loss, (_, _, idx) = self.vae.quantize(h)  # straight-through z_q
            rec = self.vae.decode(z_q, force_not_quantize=True).sample
            return rec, q_loss, idx.reshape(len(x), -1)
        post = self.vae.encode(x).latent_dist
        rec = self.vae.decode(post.sample(generator=generator)).sample  # (N, C, H, W)
        # KL per pixel, as kl_weight means in Stable Diffusion
        return rec, post.kl().mean() / x[0].numel(), None


@torch.no_grad()
def encode_stats(vae: ae.Autoencoder, x: torch.Tensor, batch: int, seed: int) -> tuple[float, float]:
    """Mean and std of the latents stage 2 will see, over a whole split: 1/std is the scaling factor
    (Rombach et al. 2022). KL: posterior samples; VQ: the deterministic pre-quantisation latents."""
    gen = torch.Generator("cpu").manual_seed(seed)
    zs = []
    for i in range(0, len(x), batch):
        mean, std = ae.posterior(vae, x[i:i + batch])
        zs.append(mean.float().cpu() + std.float().cpu() * torch.randn(mean.shape, generator=gen))
    z = torch.cat(zs)  # (N, c, h, w), c = ae.latent_channels(vae)
    return float(z.mean()), float(z.std())


@torch.no_grad()
def reset_dead_codes(vq, x: torch.Tensor, gen: torch.Generator, n_probe: int, batch: int) -> int:
    """Re-seed the codes no probe image uses with randomly chosen encoder outputs (codebook reset, as in
    Jukebox, Dhariwal et al. 2020); the probe is drawn from the step's own generator, so a resumed run repeats
    it exactly."""
    probe = x[torch.randperm(len(x), generator=gen)[:n_probe]]
    hs = torch.cat([vq.encode(probe[i:i + batch].to(vq.device)).latents for i in range(0, len(probe), batch)])
    flat = hs.permute(0, 2, 3, 1).reshape(-1, hs.shape[1])  # (N*h*w, D)
    codebook = vq.quantize.embedding.weight
    used = torch.bincount(torch.cdist(flat, codebook).argmin(dim=1), minlength=len(codebook)) > 0
    dead = (~used).nonzero().flatten()
    if len(dead):
        pick = torch.randint(0, len(flat), (len(dead),), generator=gen)
        codebook.data[dead] = flat[pick.to(flat.device)].to(codebook.dtype)
    return int(len(dead))


@torch.no_grad()
def reconstruct(vae: ae.Autoencoder, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Decode the posterior mean (or the nearest codes): the deterministic reconstruction for PSNR and
    figures."""
    return ae.reconstruct(vae, x, batch)


def recon_figure(vae: ae.Autoencoder, x: torch.Tensor, picks, norm: Normalization, meta: dict, path: Path,
                 title: str) -> None:
    """Two rows per user, originals above their reconstructions, in dB with the dataset's axes."""
    flat = [i for _, idx in picks for i in idx]
    orig_db, rec_db = norm.to_db(x[flat]).numpy(), norm.to_db(reconstruct(vae, x[flat], 64)).numpy()
    rows, k = [], 0
    for user, idx in picks:
        rows += [(f"{user} real", list(orig_db[k:k + len(idx)])),
                 (f"{user} recon", list(rec_db[k:k + len(idx)]))]
        k += len(idx)
    path.parent.mkdir(parents=True, exist_ok=True)
    spectrogram_grid(rows, meta, path, title=title)


def init_from_autoencoder(vae: ae.Autoencoder, path: str) -> None:
    """Start from a saved autoencoder's weights (same class and architecture): a fine-tune of e.g. the demo
    VAE."""
    try:
        src = ae.load_autoencoder(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"init_from {path}: {err}") from None
    if type(src) is not type(vae):
        raise ConfigError(f"init_from {path} holds a {type(src).__name__}, this run trains a "
                          f"{type(vae).__name__}")
    have, want = src.state_dict(), vae.state_dict()
    bad = sorted(k for k in have.keys() | want.keys()
                 if k not in have or k not in want or have[k].shape != want[k].shape)
    if bad:
        raise ConfigError(f"init_from {path}: its autoencoder differs from this run's preset ({len(bad)} "
                          f"tensors, e.g. {bad[:3]})")
    vae.load_state_dict(have)


def main(cfg: VAEConfig) -> dict:
    """Train stage 1 and return its summary (also written to <out>/vae_summary.json)."""
    # ---- setup ---------------------------------------------------------------------------------------
    run_dir = Path(cfg.out)
    accelerator = start_run(cfg, run_dir)
    device = accelerator.device

    # ---- data ----------------------------------------------------------------------------------------
    preset = get_preset(cfg.preset, channels=cfg.channels)
    x, labels, ds = load_split(cfg.data, "train", cfg.channels, preset.image_size)  # (N, C, H, W) in [-1, 1]
    try:
        x_test, labels_test, _ = load_split(cfg.data, "test", cfg.channels, preset.image_size)
    except (ValueError, KeyError) as err:
        accelerator.print(f"no test split ({err}); reporting PSNR on the train split only")
        x_test, labels_test = None, None
    norm = Normalization.from_meta(ds.meta)
    fig_x, fig_labels = (x_test, labels_test) if x_test is not None else (x, labels)
    picks = first_per_user(fig_labels.numpy(), ds.users, 4, cfg.users_in_grid)

    # ---- model and the shared loop (optimiser, EMA of the autoencoder, resume, logs) ---------------------
    vq = cfg.autoencoder == "vq"
    model = VAEWithPosterior(build_autoencoder(preset, cfg.autoencoder))
    if cfg.init_from:
        init_from_autoencoder(model.vae, cfg.init_from)
    model = model.to(device)
    loop = TrainLoop(cfg, accelerator, model, run_dir, ds, ema_of="vae",
                     desc=f"train-vae ({cfg.autoencoder})",
                     postfix=("l1", "perplexity"))
    if vq and cfg.dead_code_every:
        loop.after_optimizer_step = partial(codebook_reset, cfg, x, loop)
    loop.figure = lambda done: recon_figure(
        loop.shadow, fig_x, picks, norm, ds.meta, run_dir / "figures" / f"recon-{done:06d}.png",
        f"{cfg.autoencoder.upper()} autoencoder (EMA) reconstructions, step {done}")
    reg_name = "vq" if vq else "kl"

    # ---- train -----------------------------------------------------------------------------------------
    for step in loop.steps():
        gen, idx = loop.draw(step, len(x))  # this step's generator and batch indices
        xb = x[idx]  # (B, C, H, W)
        if cfg.time_shift:
            xb = roll_time(xb, torch.randint(0, xb.shape[-1], (len(xb),), generator=gen))
        xb = xb.to(device)
        loop.set_lr(step)
        with accelerator.autocast():
            rec, reg, codes = loop.model(xb, gen)
        rec = rec.float()
        l1, l2 = (rec - xb).abs().mean(), (rec - xb).pow(2).mean()
        reg = reg.float().mean()
        rec_loss = cfg.l1_weight * l1 + cfg.l2_weight * l2
        loss = rec_loss + (cfg.codebook_weight if vq else cfg.kl_weight) * reg
        loop.update(loss, step, len(xb), terms={"l1": l1, "l2": l2, reg_name: reg},
                    stats=None if codes is None else partial(batch_usage, codes, preset.vq_num_embeddings))

    # ---- export: EMA weights, measured scaling factor, metrics, figures -----------------------------------
    last = loop.finish()
    summary: dict = {}
    if accelerator.is_main_process:
        summary = export_vae(loop, last, preset=preset, x=x, x_test=x_test, fig_x=fig_x, picks=picks,
                             norm=norm, ds=ds)
    loop.close()
    return summary


def codebook_reset(cfg: VAEConfig, x: torch.Tensor, loop: TrainLoop, step: int) -> None:
    """After the optimiser step, every cfg.dead_code_every steps: re-seed the unused codes (identical on every
    rank: the reset codebook is broadcast from rank 0)."""
    done = step + 1
    if done % cfg.dead_code_every or done >= cfg.max_steps:
        return
    vq_model = loop.tracked()
    reset_dead_codes(vq_model, x, step_generator(cfg.seed, step, 0, stream=1), cfg.dead_code_probe,
                     cfg.eval_batch_size)
    weight = vq_model.quantize.embedding.weight
    weight.data.copy_(broadcast(weight.data.contiguous(), from_process=0))


def batch_usage(codes: torch.Tensor, num_embeddings: int) -> dict:
    """Codebook usage of this batch on this rank, for the log."""
    usage = ae.codebook_usage(codes, num_embeddings)
    return dict(perplexity=usage["perplexity"], batch_dead_fraction=usage["dead_fraction"])


def export_vae(loop: TrainLoop, last: dict, *, preset, x: torch.Tensor, x_test: torch.Tensor | None,
               fig_x: torch.Tensor, picks, norm: Normalization, ds) -> dict:
    """Main process, EMA weights in loop.shadow: the measured scaling factor, the saved autoencoder, PSNR,
    codebook usage (VQ), figures and the summary (returned and written to <run>/vae_summary.json)."""
    cfg, run_dir, eval_vae = loop.cfg, loop.run_dir, loop.shadow
    vq, reg_name = cfg.autoencoder == "vq", "vq" if cfg.autoencoder == "vq" else "kl"
    mean, std = encode_stats(eval_vae, x, cfg.eval_batch_size, cfg.seed)
    eval_vae.register_to_config(scaling_factor=1.0 / std)  # measured on the train split, never hard-coded
    eval_vae.save_pretrained(run_dir / "vae", safe_serialization=True)
    psnr = {}
    for split, xs in (("train", x), ("test", x_test)):
        if xs is not None:
            # model space spans 2 units = dyn_range_db dB, so this equals PSNR over the dB images.
            psnr[split] = float(peak_signal_noise_ratio(reconstruct(eval_vae, xs, cfg.eval_batch_size),
                                                        xs, data_range=2.0))
    summary = dict(autoencoder=cfg.autoencoder, steps=cfg.max_steps, scaling_factor=1.0 / std,
                   latent_mean=mean, latent_std=std, psnr_db=psnr, final=last,
                   dataset_fingerprint=ds.fingerprint, trained_on_fingerprint=loop.trained_on,
                   peak_rss_mb=logs.peak_rss_mb())
    if vq:  # codebook usage over the whole train split: collapse is the classic VQ failure
        codes = torch.cat([ae.encode_codes(eval_vae, x[i:i + cfg.eval_batch_size]).cpu()
                           for i in range(0, len(x), cfg.eval_batch_size)])
        summary["codebook"] = ae.codebook_usage(codes, preset.vq_num_embeddings)
    (run_dir / "vae_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    recon_figure(eval_vae, fig_x, picks, norm, ds.meta, run_dir / "figures" / "recon.png",
                 f"{cfg.autoencoder.upper()} autoencoder (EMA) reconstructions, "
                 f"{'test' if x_test is not None else 'train'} split, step {cfg.max_steps}, PSNR "
                 f"{psnr.get('test', psnr['train']):.1f} dB")
    plots.plot_losses(logs.read_jsonl(run_dir / "log.jsonl"), ["loss", "l1", reg_name],
                      run_dir / "figures" / "loss.png", "train-vae")
    print(f"train-vae: {cfg.max_steps} steps in {time.perf_counter() - loop.t0:.0f} s | loss "
          f"{last.get('loss', 0):.4f} | PSNR " + ", ".join(f"{k} {v:.2f} dB" for k, v in psnr.items()) +
          f" | scaling_factor {1.0 / std:.4f}" +
          (f" | codebook perplexity {summary['codebook']['perplexity']:.1f} of {preset.vq_num_embeddings}, "
           f"{100 * summary['codebook']['dead_fraction']:.1f}% dead" if vq else "") +
          f" | saved {run_dir / 'vae'}")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, VAEConfig)
    add_threads_argument(parser)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    return run_stage("vae", args, main, "data", "out")
