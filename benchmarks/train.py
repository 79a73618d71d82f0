"""Training throughput: samples/s of one optimiser step of each stage (median after warm-up) and peak memory.

    .venv/bin/python benchmarks/train.py                 # demo preset (+ base when CUDA is present)
    .venv/bin/python benchmarks/train.py --presets tiny --steps 3 --warmup 1

Each (stage, preset) runs in a fresh process so its peak memory (RSS on the CPU, max_memory_allocated on CUDA)
is its own. The steps mirror training/stages/train_vae.py and training/stages/train_unet.py on random data of
the preset's shape: the numbers are the cost of the models, not of data loading (both stages keep data in
memory).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_memory_mb(device) -> tuple[str, float]:
    import torch

    if device.type == "cuda":
        return "cuda_max_allocated", torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return "peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(stage: str, preset_name: str, batch: int, steps: int, warmup: int, device_name: str) -> dict:
    """Time `steps` optimiser steps after `warmup` untimed ones; runs inside a fresh process."""
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel, compute_snr

    from models.builders import build_vae
    from models.presets import get_preset
    from training.stages.train_unet import Denoiser
    from training.stages.train_vae import VAEWithPosterior

    device = torch.device(device_name)
    torch.manual_seed(0)
    preset = get_preset(preset_name)
    gen = torch.Generator("cpu").manual_seed(0)
    if stage == "vae":
        model = VAEWithPosterior(build_vae(preset)).to(device)
        x = torch.rand(batch, preset.channels, preset.image_size, preset.image_size, generator=gen) * 2 - 1
        x = x.to(device)

        def loss_fn():
            rec, kl_per_pixel, _ = model(x, gen)  # (reconstruction, KL per pixel, VQ indices or None)
            return (rec - x).abs().mean() + 1e-6 * kl_per_pixel
    else:
        users = [f"user{i:02d}" for i in range(10)]
        model = Denoiser(preset, users).to(device)
        sched = DDPMScheduler(**preset.scheduler_config())
        shape = (batch, preset.latent_channels, preset.latent_size, preset.latent_size)

        def loss_fn():
            z0 = torch.randn(shape, generator=gen).to(device)
            noise = torch.randn(shape, generator=gen).to(device)
            t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=gen).to(device)
            user = torch.randint(0, len(users) + 1, (batch,), generator=gen).to(device)
            pred = model(sched.add_noise(z0, noise, t), t, user)
            snr = compute_snr(sched, t)
            per = (pred - sched.get_velocity(z0, noise, t)).pow(2).mean(dim=(1, 2, 3))
            return (per * snr.clamp(max=5.0) / (snr + 1)).mean()

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMAModel(model.parameters(), decay=0.999)
    ema.to(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    mem_kind, mem_mb = _peak_memory_mb(device)
    return dict(stage=stage, preset=preset_name, device=device.type, batch=batch, steps=steps, warmup=warmup,
                step_s=med, samples_per_s=batch / med, mem_kind=mem_kind, mem_mb=mem_mb,
                threads=torch.get_num_threads(), params_m=sum(p.numel() for p in model.parameters()) / 1e6)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=None,
                   help="default: demo, plus base when CUDA is available")
    p.add_argument("--stages", nargs="+", default=["vae", "unet"], choices=["vae", "unet"])
    p.add_argument("--steps", type=int, default=8, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, kernel selection)")
    p.add_argument("--batch", type=int, default=None, help="default: the preset's training batch size")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    presets = args.presets or (["demo", "base"] if cuda else ["demo"])
    device = "cuda" if cuda else "cpu"

    from training.config import TRAINING_DEFAULTS, TrainConfig

    ctx = mp.get_context("spawn")
    for preset in presets:
        for stage in args.stages:
            batch = args.batch or TRAINING_DEFAULTS[stage].get(preset, {}).get(
                "batch_size", TrainConfig.batch_size)
            with ctx.Pool(1) as pool:
                r = pool.apply(bench, (stage, preset, batch, args.steps, args.warmup, device))
            print(f"train-{r['stage']:<4} preset={r['preset']:<5} device={r['device']} batch={r['batch']:<3} "
                  f"params={r['params_m']:.2f}M threads={r['threads']}  {r['samples_per_s']:8.1f} samples/s "
                  f"({r['step_s'] * 1000:.0f} ms/step, median of {r['steps']} after {r['warmup']} warm-up)  "
                  f"{r['mem_kind']}={r['mem_mb']:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
