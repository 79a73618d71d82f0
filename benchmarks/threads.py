"""`--threads`: one torch thread against torch's default, side by side, on the heavy commands' inner steps.

    python benchmarks/threads.py                      # demo preset, 5 timed rounds each, alternating
    python benchmarks/threads.py --rounds 3 --work train-vae,generate

Run it WITHOUT OMP_NUM_THREADS in the environment (that would make torch's default 1 too). Each round times
one unit of each workload at 1 thread and then at the default (torch's own, one per core), alternating so
that both see the same background load; prints medians, the ratio default/1 (> 1: one thread is faster) and
the load average before and after. Workloads (random weights of the preset: weights do not change speed):

- train-vae:  one optimiser step of the autoencoder (batch 16), as training/stages/train_vae.py;
- train-unet: one optimiser step of the user-conditioned UNet (batch 32), as training/stages/train_unet.py;
- generate:   one guided DPM-Solver++ step on 8 rows (models.sampling, as generate / evaluate / serve);
- enroll:     one enrolment step on the new row (models.enrolment, batch 8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

WORK = ("train-vae", "train-unet", "generate", "enroll")


def workloads(preset_name: str, names: list[str]):
    """name -> a callable doing one unit of work."""
    from diffusers import DDPMScheduler

    from models.builders import build_vae
    from models.pipeline import build_untrained_pipeline
    from models.presets import get_preset
    from training.stages.train_unet import Denoiser
    from training.stages.train_vae import VAEWithPosterior

    torch.manual_seed(0)
    preset = get_preset(preset_name)
    gen = torch.Generator().manual_seed(0)
    users = [f"user{i:02d}" for i in range(10)]
    out = {}
    if "train-vae" in names:
        vae = VAEWithPosterior(build_vae(preset))
        opt_v = torch.optim.AdamW(vae.parameters(), lr=1e-4)
        x = torch.rand(16, preset.channels, preset.image_size, preset.image_size, generator=gen) * 2 - 1

        def vae_step():
            rec, kl, _ = vae(x, gen)
            ((rec - x).abs().mean() + 1e-6 * kl).backward()
            opt_v.step()
            opt_v.zero_grad(set_to_none=True)
        out["train-vae"] = vae_step
    if "train-unet" in names:
        den = Denoiser(preset, users)
        opt_u = torch.optim.AdamW(den.parameters(), lr=1e-4)
        sched = DDPMScheduler(**preset.scheduler_config())
        shape = (32, preset.latent_channels, preset.latent_size, preset.latent_size)

        def unet_step():
            z0, noise = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
            t = torch.randint(0, 1000, (shape[0],), generator=gen)
            user = torch.randint(0, len(users) + 1, (shape[0],), generator=gen)
            (den(sched.add_noise(z0, noise, t), t, user) - noise).pow(2).mean().backward()
            opt_u.step()
            opt_u.zero_grad(set_to_none=True)
        out["train-unet"] = unet_step
    if {"generate", "enroll"} & set(names):
        pipe = build_untrained_pipeline(preset_name, users)
    if "generate" in names:
        from models.sampling import sample

        out["generate"] = lambda: sample(pipe, list(range(8)), list(range(8)), num_inference_steps=1,
                                         guidance_scale=2.0)
    if "enroll" in names:
        from models.enrolment import EnrolConfig, Enrolment

        x_db = torch.rand(4, 1, preset.image_size, preset.image_size, generator=gen).numpy() * -60
        job = Enrolment(pipe, x_db, [0] * 4, 1, EnrolConfig(steps=10_000, batch_size=8))
        out["enroll"] = job.step
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per setting (after one warm-up)")
    p.add_argument("--work", default=",".join(WORK), help=f"comma-separated, of {', '.join(WORK)}")
    args = p.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS"):
        print(f"note: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is set; torch's default is then that")
    default = torch.get_num_threads()
    names = [n for n in args.work.split(",") if n]
    work = workloads(args.preset, names)
    load0 = os.getloadavg()
    times: dict[tuple[str, int], list[float]] = {(n, k): [] for n in names for k in (1, default)}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name in names:
            for k in (1, default):
                torch.set_num_threads(k)
                t0 = time.perf_counter()
                work[name]()
                if r:
                    times[(name, k)].append(time.perf_counter() - t0)
    load1 = os.getloadavg()
    print(f"# preset={args.preset} cpus={os.cpu_count()} default threads={default} rounds={args.rounds} "
          f"loadavg(1 min) before={load0[0]:.2f} after={load1[0]:.2f}")
    print(f"{'work':<11} {'1 thread':>10} {f'{default} threads':>10} {'ratio':>7}")
    for name in names:
        one, dflt = statistics.median(times[(name, 1)]), statistics.median(times[(name, default)])
        print(f"{name:<11} {one:>9.3f}s {dflt:>9.3f}s {dflt / one:>6.2f}x")
    print("(ratio = default / 1 thread: above 1, one thread is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
