"""`evaluate --workers`: two 1-thread processes vs one 2-thread process on a trial's work, side by side in one
run.

    python benchmarks/eval_workers.py                    # demo checkpoint, data/sim10c, 3 alternating rounds

A few-shot trial is mostly sampling (10 DPM-Solver++ steps, guidance 2, batch 20) and classifier fits. Each
round runs the same work twice: once in one process with 2 torch threads, once split over 2 processes of 1
thread each, running at the same time. Printed: the median seconds per sample and per classifier fit of each
layout, and the ratios (one 2-thread process / two 1-thread processes; above 1 = the workers are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(a: argparse.Namespace) -> None:
    """One process's share: `batches` sampling batches and `fits` classifier fits, with `threads` threads."""
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from models.pipeline import DopplerPipeline
    from models.sampling import sample
    from training.data.dataset import load_dataset
    from training.eval.classifier import train_classifier

    pipe = DopplerPipeline.load(a.pipeline)
    ds = load_dataset(a.data).filter("train")
    idx, seeds = [i % len(pipe.users) for i in range(a.batch)], list(range(a.batch))
    sample(pipe, idx[:2], seeds[:2], num_inference_steps=2, guidance_scale=2.0, pad_to=a.batch)  # warm-up
    t0 = time.perf_counter()
    for b in range(a.batches):
        sample(pipe, idx, [s + 1000 * b for s in seeds], num_inference_steps=10, guidance_scale=2.0,
               pad_to=a.batch)
    t_sample = time.perf_counter() - t0
    x, y = ds.x[:350].astype(np.float32), np.unique(ds.labels[:350], return_inverse=True)[1]
    t0 = time.perf_counter()
    for f in range(a.fits):
        train_classifier(x, y, int(y.max()) + 1, dyn_range_db=60.0, epochs=4, seed=f,
                         threads=a.threads, min_steps=0)
    print(json.dumps(dict(sample_s=t_sample, fit_s=time.perf_counter() - t0)))


def run(procs: int, threads: int, a: argparse.Namespace) -> tuple[float, float]:
    """(seconds per sample, seconds per fit) of 2 batches + 2 fits of work split over `procs` processes."""
    share = dict(batches=2 // procs, fits=2 // procs)
    cmd = [sys.executable, __file__, "--child", "--threads", str(threads), "--pipeline", a.pipeline, "--data",
           a.data,
           "--batch", str(a.batch), "--batches", str(share["batches"]), "--fits", str(share["fits"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT) for _ in range(procs)]
    outs = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1]) for p in ps]
    # the layouts finish the same total work; its wall time is the slowest process's
    return max(o["sample_s"] for o in outs) / (2 * a.batch), max(o["fit_s"] for o in outs) / 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim10c")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batches", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--fits", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    one, two = [], []
    for r in range(a.rounds):  # alternate, so machine noise hits both layouts alike
        one.append(run(1, 2, a))
        two.append(run(2, 1, a))
        print(f"round {r}: one 2-thread process {one[-1][0]:.3f} s/sample, {one[-1][1]:.2f} s/fit | two "
              f"1-thread processes {two[-1][0]:.3f} s/sample, {two[-1][1]:.2f} s/fit", flush=True)
    med = lambda rows, i: statistics.median(r[i] for r in rows)  # noqa: E731
    print(f"median over {a.rounds} rounds: sampling {med(one, 0):.3f} vs {med(two, 0):.3f} s/sample -> "
          f"workers x{med(one, 0) / med(two, 0):.2f}; classifier fit {med(one, 1):.2f} vs {med(two, 1):.2f} "
          f"s -> workers x{med(one, 1) / med(two, 1):.2f}")


if __name__ == "__main__":
    main()
