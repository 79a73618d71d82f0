"""Enrolment speed: one person from 5 recordings on the demo checkpoint, and what it costs generation
meanwhile.

1. `models.enrolment.enrol` with the shipped defaults (EnrolConfig), median wall time over --runs runs
   (different seeds), with the steps/s it implies. Target on a 2-core CPU: <= 60 s.
2. Through the service (in process, real lifespan, the step worker): the latency of POST /generate
   (--samples samples, the pipeline's default steps) alone, then while a POST /users enrolment runs on the
   same device worker; median over --requests requests each, and their ratio.
3. --steady: 1-sample POST /generate requests at a steady --rate for --seconds, without and then with one
   enrolment running; p50 / p99 latency and every status other than 200, side by side in one run (the
   issue's target: p99 during an enrolment at most 3x p99 without it, and no 504 at a load admitted).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/enrol_speed.py --data data/sim_new2
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/enrol_speed.py --steady --rate 1 --seconds 40 --runs 0

Without --data (or with a folder that is not there), the person is 5 recordings the simulator makes of a
new walker (not one of the demo's people).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def person(data: Path, k: int) -> tuple[np.ndarray, list[bytes]]:
    import io

    from models.recording import read_recording

    if not (data / "manifest.csv").is_file():
        from training.data.users import make_user, simulate_recording

        print(f"{data}: no dataset; simulating {k} recordings of a new walker (user seed 4242)", flush=True)
        walker = make_user(4242, "bench")
        x = np.stack([simulate_recording(walker, i, size=64).db[None].astype(np.float32) for i in range(k)])
        raw = []
        for arr in x:
            buf = io.BytesIO()
            np.save(buf, arr[0])
            raw.append(buf.getvalue())
        return x, raw

    rows = [r for r in csv.DictReader((data / "manifest.csv").open()) if r["split"] == "train"]
    rows = [r for r in rows if r["user"] == rows[0]["user"]][:k]
    raw = [(data / r["path"]).read_bytes() for r in rows]
    return np.stack([read_recording(b, r["path"], 1, 60.0) for b, r in zip(raw, rows, strict=True)]), raw


def bench_enrol(pipeline: str, x: np.ndarray, runs: int) -> float:
    from models.enrolment import EnrolConfig, enrol
    from models.pipeline import DopplerPipeline

    pipe, times = DopplerPipeline.load(pipeline), []
    for r in range(runs):
        t0 = time.perf_counter()
        _, log = enrol(pipe, x, [0] * len(x), 1, EnrolConfig(seed=r))
        times.append(time.perf_counter() - t0)
        print(f"  run {r}: {times[-1]:.1f} s, {log['steps']} steps, final loss {log['loss_last']:.4f}",
              flush=True)
    med = statistics.median(times)
    print(f"enrol one person from {len(x)} recordings ({EnrolConfig().steps} steps, batch "
          f"{EnrolConfig().batch_size}): median {med:.1f} s over {runs} runs "
          f"({EnrolConfig().steps / med:.1f} steps/s); target <= 60 s: "
          f"{'met' if med <= 60 else 'MISSED'}", flush=True)
    return med


async def bench_service(pipeline: str, raw: list[bytes], samples: int, requests: int) -> None:
    import httpx

    from service.app import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as users:
        app = create_app(Settings(pipeline=pipeline, users_dir=users, max_batch_size=max(samples, 1)))
        async with app.router.lifespan_context(app):
            await app.state.service.wait_ready(600)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
                body = {"user_id": "user00", "num_samples": samples, "seed": 1, "format": "npy"}

                async def latency() -> float:
                    t0 = time.perf_counter()
                    r = await client.post("/generate", json=body)
                    r.raise_for_status()
                    return time.perf_counter() - t0

                await latency()  # first request after warm-up
                alone = [await latency() for _ in range(requests)]
                files = [("files", (f"rec{i}.npy", b, "application/octet-stream")) for i, b in enumerate(raw)]
                t_enrol = time.perf_counter()
                r = await client.post("/users", data={"user_id": "bench"}, files=files)
                r.raise_for_status()
                during, status = [], {}
                while len(during) < requests:
                    during.append(await latency())
                    status = (await client.get("/users/bench")).json()
                    if status["status"] != "enrolling":
                        break
                while status.get("status") == "enrolling":
                    await asyncio.sleep(0.5)
                    status = (await client.get("/users/bench")).json()
                enrol_s = time.perf_counter() - t_enrol
    a, d = statistics.median(alone), statistics.median(during)
    print(f"service: POST /generate ({samples} samples) median {a:.2f} s alone, {d:.2f} s while enrolling "
          f"({len(during)} requests, {'finished' if status.get('status') == 'ready' else status}) = "
          f"{d / a:.2f}x slower; the enrolment took {enrol_s:.1f} s beside that traffic", flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def bench_steady(pipeline: str, raw: list[bytes], rate: float, seconds: float) -> None:
    """Steady 1-sample traffic for `seconds`, alone and then beside one enrolment (which starts with it)."""
    import httpx

    from service.app import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as users:
        app = create_app(Settings(pipeline=pipeline, users_dir=users))
        async with app.router.lifespan_context(app):
            await app.state.service.wait_ready(600)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:

                async def one(seed: int) -> tuple[float, int]:
                    t0 = time.perf_counter()
                    r = await client.post("/generate", json={"user_id": "user00", "num_samples": 1,
                                                             "seed": seed, "format": "npy"})
                    return time.perf_counter() - t0, r.status_code

                async def traffic() -> list[tuple[float, int]]:
                    tasks, t0, i = [], time.perf_counter(), 0
                    while time.perf_counter() - t0 < seconds:
                        tasks.append(asyncio.create_task(one(i)))
                        i += 1
                        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                    return await asyncio.gather(*tasks)

                await one(-1)  # first request after warm-up
                alone = await traffic()
                files = [("files", (f"rec{i}.npy", b, "application/octet-stream")) for i, b in enumerate(raw)]
                t_enrol = time.perf_counter()
                (await client.post("/users", data={"user_id": "bench"}, files=files)).raise_for_status()
                during = await traffic()
                status = (await client.get("/users/bench")).json()
                progress = status.get("progress")
                while status.get("status") == "enrolling":
                    await asyncio.sleep(0.5)
                    status = (await client.get("/users/bench")).json()
                enrol_s = time.perf_counter() - t_enrol
    rows = []
    for name, res in (("alone", alone), ("enrolling", during)):
        ok = [t for t, code in res if code == 200]
        codes = sorted({code for _, code in res if code != 200})
        others = {c: sum(1 for _, code in res if code == c) for c in codes}
        rows.append((name, len(res), pct(ok, 50), pct(ok, 99), others))
        print(f"steady {rate:g}/s for {seconds:g} s, {name:9s}: {len(res)} requests, "
              f"p50 {pct(ok, 50):.2f} s, p99 {pct(ok, 99):.2f} s, non-200: {others or 'none'}", flush=True)
    ratio = rows[1][3] / rows[0][3]
    print(f"p99 while enrolling / alone: {ratio:.2f}x (target <= 3x: {'met' if ratio <= 3 else 'MISSED'}); "
          f"504s while enrolling: {rows[1][4].get(504, 0)}; the enrolment was at "
          f"{progress if progress is not None else '?'} of its steps when the traffic ended and took "
          f"{enrol_s:.1f} s in all ({status.get('status')})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", default="checkpoints/demo")
    p.add_argument("--data", default="data/sim_new2",
                   help="a dataset folder; its first user's first k train files")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=4, help="samples per POST /generate")
    p.add_argument("--requests", type=int, default=3,
                   help="POST /generate requests timed alone and while enrolling")
    p.add_argument("--skip-service", action="store_true")
    p.add_argument("--steady", action="store_true", help="only the steady-rate comparison (3. above)")
    p.add_argument("--rate", type=float, default=1.0, help="--steady: requests a second")
    p.add_argument("--seconds", type=float, default=40.0, help="--steady: how long each phase sends")
    a = p.parse_args()
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch threads: {torch.get_num_threads()}; device: cpu (GPU: not measured); load {load}",
          flush=True)
    x, raw = person(Path(a.data), a.k)
    if a.steady:
        asyncio.run(bench_steady(a.pipeline, raw, a.rate, a.seconds))
        print(f"load average after: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        return
    if a.runs:
        bench_enrol(a.pipeline, x, a.runs)
    if not a.skip_service:
        asyncio.run(bench_service(a.pipeline, raw, a.samples, a.requests))


if __name__ == "__main__":
    main()
