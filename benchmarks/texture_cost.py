"""What the texture bank (models/texture.py) costs a sample: with vs without, side by side in one run.

    python benchmarks/texture_cost.py                                   # demo checkpoint, CPU, 20 steps
    python benchmarks/texture_cost.py --device cuda --batches 1,16,64

For each batch size: the median time of a whole `sample()` call (20 DPM-Solver++ steps + decode) with the
pipeline's bank and with it switched off, alternating the two so that machine noise hits both alike, and the
median time of the bank's `add` alone. Prints the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.pipeline import DopplerPipeline  # noqa: E402
from models.sampling import sample  # noqa: E402


def timed(fn, device: str) -> float:
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="1,16")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    pipe = DopplerPipeline.load(a.pipeline, device=a.device)
    bank = pipe.texture
    if bank is None:
        raise SystemExit(f"{a.pipeline} has no texture bank (dopplergen texture --pipeline ... --data ...)")
    print(f"# {a.pipeline}: bank of {len(bank.owners)} recordings, {a.device}, torch threads "
          f"{torch.get_num_threads()}")
    for b in (int(v) for v in a.batches.split(",")):
        users, seeds = [i % len(pipe.users) for i in range(b)], list(range(b))

        def run(with_bank: bool, users=users, seeds=seeds) -> None:
            pipe.texture = bank if with_bank else None
            sample(pipe, users, seeds, num_inference_steps=a.steps)

        run(True), run(False)  # warm-up
        on, off = [], []
        for _ in range(a.repeats):
            on.append(timed(lambda: run(True), a.device))
            off.append(timed(lambda: run(False), a.device))
        pipe.texture = None
        x = sample(pipe, users, seeds, num_inference_steps=a.steps)
        names = [pipe.users[u] for u in users]
        add = [timed(lambda x=x, names=names, b=b:
                     bank.add(x, names, [torch.Generator().manual_seed(s) for s in range(b)]),
                     "cpu") for _ in range(a.repeats)]
        m_on, m_off, m_add = statistics.median(on), statistics.median(off), statistics.median(add)
        print(f"batch {b:3d}: sample() {m_on * 1e3:8.1f} ms with the bank vs {m_off * 1e3:8.1f} ms without "
              f"-> {m_on / m_off:.3f}x | bank.add alone {m_add * 1e3:.2f} ms ({m_add / b * 1e3:.2f} ms per "
              "sample)")
    pipe.texture = bank


if __name__ == "__main__":
    main()
