"""Probe: does a condition-only guidance term make a conditioned pipeline follow speed and aspect more closely?

    eps = eps(null, absent) + g_u (eps(user, absent) - eps(null, absent)) + g_c (eps(user, cond) - eps(user, absent))

g_c = 0 is close to what the service runs (there the conditional branch is eps(user, cond), i.e. g_c = g_u).
Same settings as experiments/condition_check.py (each user's 10th/50th/90th percentile training speed at 0 deg,
and the median speed at 50 deg), 6 seeds each, 20 DPM-Solver++ steps, in-process (not through the service).

    OMP_NUM_THREADS=1 python -m experiments.condition_guidance runs/cond-ft/pipeline-1400 --users 3

Measured (2026-11-30, the 1400-step cheap fine-tune of docs/conditions.md, users 00-02, 6 seeds, g_u = 2): median
torso read-out error against v cos(aspect):
    g_c = 2 (= the served guidance 2):  (slow,0) +0.074  (fast,0) -0.304  (mid,0) -0.175  (mid,50) +0.068
    g_c = 4:                            (slow,0) +0.076  (fast,0) -0.233  (mid,0) -0.102  (mid,50) -0.066
Conclusion: a stronger condition-only term helps a little (fast and mid move toward the target) but the speed stays
compressed toward the person's own; it does not rescue this under-trained encoder, so it is not in the sampler
(it would cost a third network branch per row).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from models import autoencoder as ae
from models.pipeline import DopplerPipeline
from training.data.dataset import load_dataset
from training.eval.conditions import torso_mps

SETTINGS = (("slow", 2, 0.0), ("fast", 18, 0.0), ("mid", 10, 0.0), ("mid", 10, 50.0))


@torch.no_grad()
def guided(pipe: DopplerPipeline, user: int, cond: dict, seeds: list[int], gu: float, gc: float) -> np.ndarray:
    """DPM-Solver++(2M) with the three-branch guidance above; (N, C, H, W) dB."""
    n, enc = len(seeds), pipe.condition_encoder
    sched = DPMSolverMultistepScheduler.from_config(pipe.scheduler_config, algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(20)
    x = torch.stack([torch.randn(pipe.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
    idx, null = torch.full((n,), user), torch.full((n,), pipe.user_encoder.null_index)
    absent, vals = enc.absent_values(n), enc.values_tensor([cond] * n)
    ctx = torch.cat([pipe.encode_context(null, absent), pipe.encode_context(idx, absent), pipe.encode_context(idx, vals)])
    for t in sched.timesteps:
        e_u, e_user, e_c = pipe.denoiser(torch.cat([x] * 3), t, encoder_hidden_states=ctx).sample.chunk(3)
        x = sched.step(e_u + gu * (e_user - e_u) + gc * (e_c - e_user), t, x).prev_sample
    return pipe.normalization.to_db(ae.decode_latents(pipe.vae, x)).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pipeline")
    p.add_argument("--data", default="data/sim10c")
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--gu", type=float, default=2.0)
    p.add_argument("--gc", default="2,4", help="condition guidance scales to compare")
    args = p.parse_args()
    torch.set_num_threads(1)
    pipe = DopplerPipeline.load(args.pipeline)
    meta = load_dataset(args.data, split="test").meta
    stats = pipe.meta["conditions"]["speed_mps"]["per_user"]
    seeds = [1, 2, 3, 4, 5, 6]
    for gc in [float(g) for g in args.gc.split(",")]:
        errs = []
        for name, qi, aspect in SETTINGS:
            e = []
            for u in range(args.users):
                v = stats[pipe.users[u]]["quantiles"][qi]
                r = torso_mps(guided(pipe, u, {"speed_mps": v, "aspect_deg": aspect}, seeds, args.gu, gc), meta)
                e += list(r / (v * np.cos(np.deg2rad(aspect))) - 1)
            errs.append(f"({name},{aspect:g}) {np.median(e):+.3f}")
        print(f"g_u {args.gu:g} g_c {gc:g}: " + "  ".join(errs), flush=True)


if __name__ == "__main__":
    main()
