"""Load benchmark for `dopplergen serve`: throughput and latency vs concurrency, batching gain, service overhead.

    .venv/bin/python benchmarks/serve_load.py                 # CPU, demo checkpoint (or an untrained demo model)
    .venv/bin/python benchmarks/serve_load.py --quick         # one round per point, fewer requests
    .venv/bin/python benchmarks/serve_load.py --device cuda --dtype fp16

Starts the real server (uvicorn subprocess) and drives it with closed-loop httpx clients, each sending
one-sample requests back to back. Reports, per concurrency: throughput (samples/s, median over rounds),
p50/p99 latency, errors and the mean batch size that formed. Then two ratios, from medians:
  batched (max_batch_size 16) vs unbatched (max_batch_size 1) throughput at concurrency 16 (target >= 2.5x),
  service throughput with full batches vs models.sampling.sample() in-process at batch 16 (target >= 0.85).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", type=Path, default=None, help="default: checkpoints/demo, else an untrained demo model")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps per sample")
    p.add_argument("--batch", type=int, default=16, help="max_batch_size of the batched server")
    p.add_argument("--max-wait-ms", type=float, default=None,
                   help="default 100 on the CPU (a batch takes seconds), 10 on a GPU")
    p.add_argument("--concurrency", default="1,4,16,32", help="comma-separated client counts")
    p.add_argument("--rounds", type=int, default=3, help="rounds per point; medians are reported")
    p.add_argument("--threads", type=int, default=None, help="torch threads in server and baseline (default: torch's)")
    p.add_argument("--quick", action="store_true", help="one round per point and fewer requests")
    args = p.parse_args()
    if args.quick:
        args.rounds = 1
    if args.max_wait_ms is None:
        args.max_wait_ms = 10.0 if args.device.startswith("cuda") else 100.0
    args.levels = [int(c) for c in args.concurrency.split(",")]
    if 16 not in args.levels:
        p.error("--concurrency must include 16 (the batching ratio is taken there)")
    return args


def resolve_pipeline(args: argparse.Namespace) -> Path:
    if args.pipeline is not None:
        return args.pipeline
    demo = REPO / "checkpoints" / "demo"
    if (demo / "dopplergen.json").is_file():
        return demo
    from models.pipeline import build_untrained_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="dopplergen-bench-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    out = tmp / "demo-untrained"
    build_untrained_pipeline("demo", [f"user{i:02d}" for i in range(8)], version="untrained").save(out)
    print(f"# {demo} not found: built an untrained `demo`-preset pipeline in {out} (speed does not depend on weights)")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(args: argparse.Namespace, pipeline: Path, max_batch_size: int):
    """A `dopplergen serve` subprocess on a loopback port; yields its base URL once /readyz is 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOPPLERGEN_")}
    env["HF_HUB_OFFLINE"] = "1"
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, "-m", "training.cli", "serve", "--pipeline", str(pipeline), "--port", str(port),
           "--device", args.device, "--dtype", args.dtype, "--max-batch-size", str(max_batch_size),
           "--max-wait-ms", str(args.max_wait_ms), "--max-queue", "4096", "--request-timeout-s", "600",
           "--log-level", "warning", "--no-access-log"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 300 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def batch_stats(base: str) -> tuple[float, float]:
    """(sum, count) of the dopplergen_batch_size histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        for s in family.samples:
            values[s.name] = s.value
    return values.get("dopplergen_batch_size_sum", 0.0), values.get("dopplergen_batch_size_count", 0.0)


async def drive(client: httpx.AsyncClient, body: dict, concurrency: int, n_requests: int):
    """Closed loop: `concurrency` clients send one-sample requests back to back until n_requests are sent.

    Returns (completion time, latency) of each successful request, in completion order, and the error count.
    """
    done: list[tuple[float, float]] = []
    errors = 0
    todo = iter(range(n_requests))

    async def worker() -> None:
        nonlocal errors
        for i in todo:
            t = time.perf_counter()
            try:
                r = await client.post("/generate", json={**body, "seed": i})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                done.append((time.perf_counter(), time.perf_counter() - t))
            else:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, errors


def measure(base: str, args: argparse.Namespace, concurrency: int, label: str) -> float:
    """Steady-state throughput at one concurrency; prints one line and returns the median over rounds (samples/s).

    The clients run without pause through a ramp-up (one request each, not measured) and `rounds` rounds of
    about two batches' worth of requests; round r's throughput is its requests over the time between the completions
    that end round r-1 and round r, so no round pays for connection set-up or for clients starting in step.
    """
    users = httpx.get(f"{base}/users", timeout=10).json()["users"]
    body = {"user_id": users[0], "num_samples": 1, "num_inference_steps": args.steps, "scheduler": "dpmsolver++"}
    per_round = min(2 * concurrency, 2 * args.batch) if concurrency > 1 else 2  # about two batches per round
    ramp = concurrency

    async def run():
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
            return await drive(client, body, concurrency, ramp + per_round * args.rounds)

    s0, c0 = batch_stats(base)
    done, errors = asyncio.run(run())
    s1, c1 = batch_stats(base)
    mean_batch = (s1 - s0) / max(c1 - c0, 1)
    ends = [done[min(ramp - 1 + r * per_round, len(done) - 1)][0] for r in range(args.rounds + 1)] if done else []
    rates = [per_round / (b - a) for a, b in zip(ends, ends[1:], strict=False) if b > a]
    lat = [latency for _, latency in done[ramp:]]
    p50, p99 = np.percentile(lat, [50, 99]) if lat else (float("nan"),) * 2
    rate = statistics.median(rates) if rates else float("nan")
    print(f"{label:<10} concurrency={concurrency:<3} requests={per_round * args.rounds:<4} "
          f"throughput={rate:7.2f} samples/s  p50={p50:6.2f}s  p99={p99:6.2f}s  errors={errors}  "
          f"mean_batch={mean_batch:5.1f}", flush=True)
    return rate


def in_process(args: argparse.Namespace, pipeline: Path, batch: int) -> tuple[float, float]:
    """models.sampling.sample() called directly, one sample and a full (padded) batch: the service's ceiling."""
    import torch

    from models.pipeline import DopplerPipeline
    from models.sampling import sample
    from service.settings import Settings, torch_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    s = Settings(device=args.device, dtype=args.dtype, max_batch_size=batch)
    device = s.resolved_device()
    dtype = s.resolved_dtype(device)
    pad = batch if s.resolved_padding(device) == "fixed" else None
    pipe = DopplerPipeline.load(pipeline, device=device, dtype=torch_dtype(dtype))
    guidance = float(pipe.meta.get("guidance_scale", 2.0))

    def once(seed0: int, n: int) -> float:
        t = time.perf_counter()
        sample(pipe, [0] * n, list(range(seed0, seed0 + n)), num_inference_steps=args.steps,
               guidance_scale=guidance, scheduler="dpmsolver++", pad_to=pad if n > 1 else None)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    rates = {}
    for n in (1, batch):
        once(0, n)  # warm-up at this shape
        rates[n] = statistics.median(n / once(100 * (r + 1), n) for r in range(args.rounds))
        print(f"{'in-process':<10} batch={n:<3} sample() x{args.rounds}: throughput={rates[n]:7.2f} samples/s "
              f"({n / rates[n]:.2f}s per batch)", flush=True)
    return rates[1], rates[batch]


def main() -> int:
    args = parse_args()
    t_start = time.perf_counter()
    pipeline = resolve_pipeline(args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# pipeline={pipeline} device={args.device} dtype={args.dtype} steps={args.steps} (dpmsolver++) "
          f"max_wait_ms={args.max_wait_ms} rounds={args.rounds} threads={args.threads or 'default'} "
          f"cpus={os.cpu_count()} loadavg={load:.1f}", flush=True)
    if load > (os.cpu_count() or 1):
        print("# warning: the machine is busy, so these numbers are noisy; with more torch threads than free cores,"
              " OpenMP stalls can slow the model many-fold (--threads 1 avoids that)", flush=True)

    rates: dict[int, float] = {}
    with server(args, pipeline, args.batch) as base:
        for c in args.levels:
            rates[c] = measure(base, args, c, f"batch={args.batch}")
    with server(args, pipeline, 1) as base:
        single = measure(base, args, 1, "batch=1")
        unbatched = measure(base, args, 16, "batch=1")
    single_ceiling, baseline = in_process(args, pipeline, args.batch)

    batched16 = rates[16]
    full = max(rates.values())  # the best point: enough clients to keep every batch full
    print(f"batching gain at concurrency 16: {batched16 / unbatched:.2f}x "
          f"({batched16:.2f} vs {unbatched:.2f} samples/s; target >= 2.5x); the model's own gain in-process, "
          f"batch {args.batch} vs 1: {baseline / single_ceiling:.2f}x")
    print(f"service vs in-process sample() at batch {args.batch}: {full / baseline:.2f} "
          f"({full:.2f} vs {baseline:.2f} samples/s, best concurrency; target >= 0.85); "
          f"at concurrency 16: {batched16 / baseline:.2f}")
    print(f"single request, unbatched server: {single:.2f} samples/s; "
          f"batched server at concurrency 1: {rates.get(1, float('nan')):.2f} samples/s")
    print(f"# total {time.perf_counter() - t_start:.0f}s, loadavg now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
