"""Sampler throughput: batch size x dtype x torch.compile, measured side by side in one run.

    python benchmarks/sample_speed.py             # CPU, fp32, demo preset
    python benchmarks/sample_speed.py --device cuda --dtypes fp32,fp16,bf16 --compile --batches 1,16,64
    python benchmarks/sample_speed.py --composed  # conditioned pipeline: plain vs compositional guidance

Prints per-configuration medians (samples/s, ms/batch) and ratios against the batch-1 fp32 eager baseline.
Weights do not change speed, so an untrained pipeline of the preset is used when --pipeline is missing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.pipeline import DopplerPipeline, build_untrained_pipeline  # noqa: E402
from models.sampling import sample  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load(args: argparse.Namespace, dtype: torch.dtype) -> DopplerPipeline:
    if args.pipeline and (Path(args.pipeline) / "dopplergen.json").is_file():
        return DopplerPipeline.load(args.pipeline, device=args.device, dtype=dtype)
    return build_untrained_pipeline(args.preset, [f"user{i:02d}" for i in range(10)]).to(args.device, dtype)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_batch(pipe: DopplerPipeline, batch: int, args: argparse.Namespace,
               composed: bool | None = None) -> float:
    """Median seconds per batch. `composed`: None = no conditions; False = conditions named, plain guidance;
    True = the same conditions with compositional guidance (identity --guidance, conditions 1; three
    branches)."""
    users, seeds = [i % len(pipe.users) for i in range(batch)], list(range(batch))
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, sampler="dpmsolver++")
    if composed is not None:
        enc = pipe.condition_encoder
        mid = {n: sum(s["range"]) / 2
               for n, s in zip(enc.names, enc.specs, strict=True) if s["type"] == "numeric"}
        kw.update(conditions=enc.values_tensor([mid] * batch),
                  condition_guidance_scale=1.0 if composed else None)
    for _ in range(args.warmup):
        sample(pipe, users, seeds, **kw)
    times = []
    for _ in range(args.repeats):
        sync(args.device)
        t0 = time.perf_counter()
        sample(pipe, users, seeds, **kw)
        sync(args.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", default="checkpoints/demo")
    ap.add_argument("--preset", default="demo", help="used when --pipeline is missing")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="fp32")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(unet)")
    ap.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                    help="torch.compile mode, e.g. 'default', 'reduce-overhead' (CUDA graphs), "
                         "'max-autotune-no-cudagraphs'")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--composed", action="store_true",
                    help="a pipeline with conditions: time plain against compositional guidance "
                         "(models.sampling)")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device={name} torch={torch.__version__} steps={args.steps} (DPM-Solver++) "
          f"guidance={args.guidance}")
    base = None
    for dname in args.dtypes.split(","):
        for compiled in ([False, True] if args.compile else [False]):
            pipe = load(args, DTYPES[dname])
            if compiled:
                pipe.unet = torch.compile(pipe.unet, mode=args.compile_mode, dynamic=False)
            for b in batches:
                if args.composed:
                    if pipe.condition_encoder is None:
                        raise SystemExit("--composed needs a pipeline with conditions (e.g. "
                                         "checkpoints/demo)")
                    plain, comp = time_batch(pipe, b, args, False), time_batch(pipe, b, args, True)
                    print(f"{dname:14s} batch={b:3d}  plain {plain * 1e3:8.1f} ms  composed "
                          f"{comp * 1e3:8.1f} ms  composed / plain time x{comp / plain:5.2f}")
                    continue
                t = time_batch(pipe, b, args)
                sps = b / t
                base = base or sps
                tag = f"{dname}{f'+compile({args.compile_mode})' if compiled else ''}"
                print(f"{tag:14s} batch={b:3d}  {t * 1e3:9.1f} ms/batch  {sps:8.1f} samples/s  "
                      f"x{sps / base:6.2f} vs first row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
