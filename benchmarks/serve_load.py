"""Load benchmark for `dopplergen serve` with step-level batching: the done-when checks of issue 14, as
ratios.

    .venv/bin/python benchmarks/serve_load.py                      # CPU, demo checkpoint, every check
    .venv/bin/python benchmarks/serve_load.py --only lone,overload
    .venv/bin/python benchmarks/serve_load.py --device cuda --dtype fp16 --batch 64 --only gpu

Starts real servers (`dopplergen serve` subprocesses on loopback) and prints, from medians:
  lone      a lone 20-step request on the default server vs on a batching-off server (max_batch_size 1)
            (target <= 1.3x), and 16 concurrent 1-sample requests: throughput vs the unbatched server
            (>= 1.8x);
  long      a 20-step request sent 1 s after a maximum-step request (DDPM, max_steps): its latency / lone
            latency (target <= 3x, or the long one refused at admission);
  abandon   a client abandons a long request after 1 s; a 20-step request sent right after: latency vs
            3 x lone + 1 s;
  overload  2 waves of 96 concurrent requests: only 200 or 429, every 429 within 0.5 s, /healthz within 1 s;
  determinism  one seed alone vs inside a burst of 16: max abs difference in dB;
  gpu       HTTP at concurrency 2 x batch vs in-process (compiled on CUDA) step loop at that batch (>= 0.8x),
            and the batching gain at concurrency 16 (>= 4x). Meant for a GPU; runs anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CHECKS = ("lone", "long", "abandon", "overload", "determinism", "gpu")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", type=Path, default=REPO / "checkpoints" / "demo")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps of the short requests")
    p.add_argument("--batch", type=int, default=16, help="max_batch_size (slots) of the default server")
    p.add_argument("--padding", default="auto", choices=["auto", "fixed", "buckets", "none"])
    p.add_argument("--rounds", type=int, default=5, help="lone requests per median")
    p.add_argument("--request-timeout-s", type=float, default=60.0,
                   help="of the default server (60 = the service's)")
    p.add_argument("--only", default=",".join(c for c in CHECKS if c != "gpu"),
                   help=f"comma list of {CHECKS}")
    args = p.parse_args()
    args.checks = [c.strip() for c in args.only.split(",") if c.strip()]
    if bad := set(args.checks) - set(CHECKS):
        p.error(f"unknown checks {sorted(bad)}")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(args: argparse.Namespace, max_batch_size: int, **flags):
    """A `dopplergen serve` subprocess on a loopback port; yields its base URL once /readyz is 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOPPLERGEN_")}
    env["HF_HUB_OFFLINE"] = "1"
    env["DOPPLERGEN_USERS_DIR"] = "none"  # a benchmark enrols nobody: keep the real home clean
    cmd = [sys.executable, "-m", "training.cli", "serve", "--pipeline", str(args.pipeline), "--port",
           str(port),
           "--device", args.device, "--dtype", args.dtype, "--max-batch-size", str(max_batch_size),
           "--batch-padding", flags.pop("batch_padding", args.padding), "--log-level", "warning",
           "--no-access-log",
           "--request-timeout-s", str(flags.pop("request_timeout_s", args.request_timeout_s))]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError("server exited with "
                                   f"{proc.returncode}:\n{log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 900 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@functools.cache
def first_user(base: str) -> str:
    return httpx.get(f"{base}/users", timeout=10).json()["users"][0]


def body(base: str, seed: int, **kw) -> dict:
    return {"user_id": first_user(base), "num_samples": 1, "seed": seed, "format": "npy", **kw}


async def post(client: httpx.AsyncClient, payload: dict) -> tuple[int, float, dict | None]:
    t = time.perf_counter()
    r = await client.post("/generate", json=payload)
    return r.status_code, time.perf_counter() - t, (r.json() if r.status_code == 200 else None)


def lone_latency(base: str, args: argparse.Namespace) -> float:
    """Median latency of lone short requests sent one after another (after one not counted)."""
    async def run():
        async with httpx.AsyncClient(base_url=base, timeout=600) as c:
            await post(c, body(base, 0, num_inference_steps=args.steps))
            return [(await post(c, body(base, i,
                                        num_inference_steps=args.steps)))[1] for i in range(args.rounds)]
    return statistics.median(asyncio.run(run()))


def burst_throughput(base: str, args: argparse.Namespace, n: int, rounds: int = 3) -> float:
    """Median over rounds of n concurrent 1-sample requests: samples per second from first send to last
    answer."""
    async def run():
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
            await asyncio.gather(*[post(c, body(base, i, num_inference_steps=args.steps)) for i in range(n)])
            rates = []
            for r in range(rounds):
                t = time.perf_counter()
                out = await asyncio.gather(*[post(c, body(base, 1000 * r + i, num_inference_steps=args.steps))
                                             for i in range(n)])
                assert all(s == 200 for s, _, _ in out), [s for s, _, _ in out]
                rates.append(n / (time.perf_counter() - t))
            return statistics.median(rates)
    return asyncio.run(run())


def check_lone(args) -> float:
    with server(args, args.batch) as base:
        lone, burst = lone_latency(base, args), burst_throughput(base, args, 16)
    # Batching off needs a longer budget: its own admission rightly refuses 16 x 20 steps one row at a time.
    with server(args, 1, request_timeout_s=600) as base:
        lone_off, burst_off = lone_latency(base, args), burst_throughput(base, args, 16)
    print(f"lone {args.steps}-step request: {lone:.3f}s default (slots {args.batch}, padding {args.padding}) "
          f"vs {lone_off:.3f}s batching off -> {lone / lone_off:.2f}x (target <= 1.3x)")
    if args.padding != "fixed":  # the other CPU choice: bitwise determinism, a lone request pays a full batch
        with server(args, args.batch, batch_padding="fixed") as base:
            lone_fixed = lone_latency(base, args)
        print(f"lone {args.steps}-step request with fixed padding (bitwise): {lone_fixed:.3f}s -> "
              f"{lone_fixed / lone_off:.2f}x batching off")
    print(f"16 concurrent 1-sample requests: {burst:.2f} vs {burst_off:.2f} samples/s unbatched -> "
          f"{burst / burst_off:.2f}x (target >= 1.8x)", flush=True)
    return lone


def check_long(args, lone: float, abandon: bool) -> None:
    """A maximum-step request, then a short one 1 s later (after abandoning the long one when `abandon`)."""
    with server(args, args.batch) as base:
        max_steps = httpx.get(f"{base}/info", timeout=10).json()["limits"]["max_steps"]

        async def run():
            async with httpx.AsyncClient(base_url=base, timeout=600) as c, \
                    httpx.AsyncClient(base_url=base, timeout=600) as c2:
                long = asyncio.create_task(post(c, body(base, 1, num_inference_steps=max_steps,
                                                        scheduler="ddpm")))
                await asyncio.sleep(1.0)
                if long.done():  # refused at admission (or already finished)
                    return long.result()[0], None
                if abandon:
                    long.cancel()  # the client goes away: its connection closes
                    await c.aclose()
                status, latency, _ = await post(c2, body(base, 2, num_inference_steps=args.steps))
                assert status == 200, status
                first = None if abandon else (await long)[0]
                return first, latency

        first, latency = asyncio.run(run())
    if latency is None:
        print(f"max-step request ({max_steps} DDPM steps): answered {first} within 1 s (refused at "
              "admission)")
    elif abandon:
        print(f"after abandoning a {max_steps}-step request: {args.steps}-step request in {latency:.3f}s = "
              f"{latency / lone:.2f}x lone ({lone:.3f}s); limit 3x lone + 1 s = {3 * lone + 1:.2f}s -> "
              f"{'met' if latency <= 3 * lone + 1 else 'MISSED'}", flush=True)
    else:
        print(f"{args.steps}-step request 1 s after a {max_steps}-step one (answered {first}): "
              f"{latency:.3f}s = {latency / lone:.2f}x lone ({lone:.3f}s) (target <= 3x)", flush=True)


def check_overload(args) -> None:
    with server(args, args.batch) as base:
        health: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=base, timeout=30) as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    c.get("/healthz")
                    health.append(time.perf_counter() - t)
                    time.sleep(0.1)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()

        async def wave(k: int):
            limits = httpx.Limits(max_connections=96, max_keepalive_connections=96)
            async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
                return await asyncio.gather(*[post(c, body(base, 10_000 * k + i,
                                                           num_inference_steps=args.steps))
                                              for i in range(96)])
        results = []
        for k in range(2):
            t = time.perf_counter()
            out = asyncio.run(wave(k))
            results += out
            codes = {s: sum(1 for x, _, _ in out if x == s) for s in sorted({x for x, _, _ in out})}
            print(f"overload wave {k + 1}: 96 requests in {time.perf_counter() - t:.1f}s, statuses {codes}",
                  flush=True)
        stop.set()
        prober.join()
    slow_429 = [lat for s, lat, _ in results if s == 429]
    others = {s for s, _, _ in results} - {200, 429}
    print(f"overload: statuses other than 200/429: {sorted(others) or 'none'}; 429s: {len(slow_429)}, "
          f"slowest {max(slow_429, default=0):.3f}s (target <= 0.5 s); /healthz: {len(health)} probes, "
          f"median {statistics.median(health):.3f}s, max {max(health):.3f}s (target <= 1 s)", flush=True)


def check_determinism(args) -> None:
    with server(args, args.batch) as base:
        async def run():
            limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
            async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
                alone = (await post(c, body(base, 4242, num_inference_steps=args.steps)))[2]
                burst = await asyncio.gather(*[post(c, body(base, 4242 if i == 7 else i,
                                                            num_inference_steps=args.steps))
                                               for i in range(16)])
                return alone, burst[7][2]
        a, b = (np.load(io.BytesIO(base64.b64decode(x["items"][0]["data"]))) for x in asyncio.run(run()))
    print(f"determinism (padding {args.padding}): seed alone vs in a burst of 16: max |diff| "
          f"{np.abs(a - b).max():.2e} dB, bitwise {np.array_equal(a, b)} (target: within 0.05 dB; bitwise "
          "with fixed)")


def check_gpu(args) -> None:
    """In-process step loop at batch B (compiled on CUDA, as the server runs it) vs HTTP at concurrency 2B."""
    import torch

    from models.pipeline import DopplerPipeline
    from models.sampling import resolve
    from service.engine import Engine, RowSpec
    from service.settings import Settings, torch_dtype

    s = Settings(pipeline=args.pipeline, device=args.device, dtype=args.dtype, max_batch_size=args.batch,
                 batch_padding=args.padding)
    engine = Engine(s)
    engine.pipe = DopplerPipeline.load(args.pipeline, device=engine.device, dtype=torch_dtype(engine.dtype))
    engine.warmup()
    spec = RowSpec(0, args.steps, resolve(engine.pipe).guidance, "dpmsolver++")
    rates = []
    for r in range(3):
        t = time.perf_counter()
        rows = [engine.start(spec, 100 * r + i) for i in range(args.batch)]
        while not rows[0].done:
            engine.step(rows)
        [engine.finish(x) for x in rows]
        rates.append(args.batch / (time.perf_counter() - t))
    inproc = statistics.median(rates)
    del engine
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with server(args, args.batch) as base:
        http = burst_throughput(base, args, 2 * args.batch)
        b16 = burst_throughput(base, args, 16)
    with server(args, 1, request_timeout_s=600) as base:
        off16 = burst_throughput(base, args, 16)
    print(f"gpu: HTTP at concurrency {2 * args.batch}: {http:.1f} samples/s vs in-process batch "
          f"{args.batch}: {inproc:.1f} -> {http / inproc:.2f}x (target >= 0.8x); batching gain at "
          f"concurrency 16: {b16 / off16:.2f}x ({b16:.1f} vs {off16:.1f}; target >= 4x)",
          flush=True)


def main() -> int:
    args = parse_args()
    t0 = time.perf_counter()
    print(f"# pipeline={args.pipeline} device={args.device} dtype={args.dtype} slots={args.batch} "
          f"padding={args.padding} steps={args.steps} request_timeout_s={args.request_timeout_s} "
          f"cpus={os.cpu_count()} loadavg={os.getloadavg()}", flush=True)
    lone = None
    if {"lone", "long", "abandon"} & set(args.checks):
        lone = check_lone(args) if "lone" in args.checks else None
        if lone is None:
            with server(args, args.batch) as base:
                lone = lone_latency(base, args)
    if "long" in args.checks:
        check_long(args, lone, abandon=False)
    if "abandon" in args.checks:
        check_long(args, lone, abandon=True)
    if "overload" in args.checks:
        check_overload(args)
    if "determinism" in args.checks:
        check_determinism(args)
    if "gpu" in args.checks:
        check_gpu(args)
    print(f"# total {time.perf_counter() - t0:.0f}s, loadavg now {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
