"""A row's life in the step worker: admission (422 / 429), cancellation at the next step, failures, OOM,
shutdown, jobs."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import numpy as np
import pytest
import torch

from service.rows import QueueFull, UserGone
from tests.service.conftest import FakeStepper, serve
from tests.service.test_batching import body, wait_until

pytestmark = pytest.mark.anyio


def rejections(app, reason: str) -> float:
    return app.state.service.metrics.rejections.labels(reason=reason)._value.get()


def cancellations(app, reason: str) -> float:
    return app.state.service.metrics.cancellations.labels(reason=reason)._value.get()


async def hold_and_queue(client, fake, worker, queued: dict, depth: int) -> tuple[asyncio.Task, asyncio.Task]:
    """Request seed 1 holds the device (its step blocks on the closed gate) while `queued` waits as `depth`
    rows."""
    fake.gate.clear()
    running = asyncio.create_task(client.post("/generate", json=body(1)))
    await wait_until(fake.entered.is_set)
    waiting = asyncio.create_task(client.post("/generate", json=queued))
    await wait_until(lambda: worker.depth == depth)
    return running, waiting


async def test_work_that_could_never_finish_in_time_gets_422_at_once(make_app):
    fake = FakeStepper(delay_s=0.02)  # measured at warm-up: 100 steps alone take ~2 s
    app = make_app(fake, request_timeout_s=1.0)
    async with serve(app) as client:
        t0 = time.monotonic()
        r = await client.post("/generate", json=body(1, num_inference_steps=100))
        assert time.monotonic() - t0 < 0.5
        ok = await client.post("/generate", json=body(2, num_inference_steps=10))
    assert r.status_code == 422 and r.json()["error"] == "too_long" and "request_timeout_s" in r.text
    assert ok.status_code == 200
    assert 1 not in fake.seeds_run and rejections(app, "too_long") == 1


async def test_load_that_would_miss_the_deadline_gets_429_with_retry_after_at_once(make_app):
    fake = FakeStepper(delay_s=0.05)
    app = make_app(fake, max_batch_size=1, request_timeout_s=2.0)  # admits work estimated under 1.6 s
    async with serve(app) as client:
        first = asyncio.create_task(client.post("/generate", json=body(1, num_inference_steps=20)))  # ~1.0 s
        await wait_until(fake.entered.is_set)
        t0 = time.monotonic()
        r = await client.post("/generate", json=body(2, num_inference_steps=20))  # ~1.0 s more behind it
        assert time.monotonic() - t0 < 0.5
        assert r.status_code == 429 and r.json()["error"] == "overloaded"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert (await first).status_code == 200
    assert 2 not in fake.seeds_run and rejections(app, "overloaded") == 1


async def test_more_waiting_rows_than_max_queue_get_429_queue_full(make_app, fake):
    app = make_app(fake, max_batch_size=1, max_queue=2, max_samples_per_request=2)
    worker = app.state.service.worker
    async with serve(app) as client:
        running, queued = await hold_and_queue(client, fake, worker, body(2, num_samples=2), depth=2)
        r = await client.post("/generate", json=body(9))
        assert (r.status_code == 429 and r.json()["error"] == "queue_full"
                and int(r.headers["retry-after"]) >= 1)
        fake.gate.set()
        assert [x.status_code for x in await asyncio.gather(running, queued)] == [200, 200]
    assert rejections(app, "queue_full") == 1 and 9 not in fake.seeds_run


async def test_timeout_answers_504_and_frees_the_rows_at_the_next_step(make_app, fake):
    app = make_app(fake, max_batch_size=2, request_timeout_s=0.5)
    async with serve(app) as client:
        fake.delay_s = 0.05  # now slower than admission measured: 40 steps take 2 s
        r = await client.post("/generate", json=body(1, num_inference_steps=40))
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        stepped = len(fake.calls)
        await asyncio.sleep(0.3)
        assert len(fake.calls) <= stepped + 1  # at most the step already on the device
        assert (await client.post("/generate", json=body(2))).status_code == 200
    assert stepped < 15
    assert cancellations(app, "timeout") == 1 and rejections(app, "timeout") == 1
    assert app.state.service.metrics.rows_left.labels(reason="cancelled")._value.get() == 1


def _scope(path: str, body_bytes: bytes) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body_bytes)).encode())],
        "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    }


async def test_a_client_that_disconnects_mid_generation_frees_its_rows(make_app, fake):
    app = make_app(fake, max_batch_size=4)
    async with serve(app) as client:
        fake.delay_s = 0.02
        # A raw ASGI call whose client hangs up while its row is being denoised.
        payload, gone, sent = json.dumps(body(2, num_inference_steps=200)).encode(), asyncio.Event(), []
        state = {"body_sent": False}

        async def receive():
            if not state["body_sent"]:
                state["body_sent"] = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        call = asyncio.create_task(app(_scope("/generate", payload), receive, send))
        await wait_until(lambda: len(fake.calls) >= 3)
        gone.set()
        await asyncio.wait_for(call, 5)
        stepped = len(fake.calls)
        after = await client.post("/generate", json=body(3))
    assert after.status_code == 200 and sent[0]["status"] == 499
    assert sum(2 in c["seeds"] for c in fake.calls) <= stepped + 1 < 50
    assert all(c["seeds"] == [3] for c in fake.calls[stepped + 1:])
    assert rejections(app, "disconnected") == 1 and cancellations(app, "disconnected") == 1


async def test_a_cancelled_request_task_has_its_rows_dropped(make_app, fake):
    app = make_app(fake, max_batch_size=1)
    worker = app.state.service.worker
    async with serve(app) as client:
        first, doomed = await hold_and_queue(client, fake, worker, body(2, num_samples=3), depth=3)
        doomed.cancel()  # ASGITransport runs the app in this task: the handler sees the cancellation
        with pytest.raises(asyncio.CancelledError):
            await doomed
        fake.gate.set()
        await first
        await wait_until(lambda: worker.depth == 0)
    assert fake.seeds_run == {1}


async def test_a_failing_step_fails_only_its_requests_and_the_worker_lives_on(make_app):
    fake = FakeStepper(fail=lambda seeds: RuntimeError("boom") if 13 in seeds else None)
    app = make_app(fake, max_batch_size=4, max_wait_ms=200)
    async with serve(app) as client:
        bad = await asyncio.gather(*[client.post("/generate", json=body(s)) for s in (13, 14)])
        good = await client.post("/generate", json=body(20))
    assert fake.sizes == [2, 1, 1, 1]
    for r in bad:
        assert r.status_code == 500
        assert r.json() == {
            "error": "batch_failed", "message": "internal server error; the server log has the details"
        }
    assert good.status_code == 200
    assert app.state.service.metrics.batch_failures._value.get() == 1


async def test_out_of_memory_halves_the_slots_and_carries_on(make_app):
    fake = FakeStepper(fail=lambda seeds: (torch.cuda.OutOfMemoryError("CUDA out of memory")
                                           if len(seeds) > 2 else None))
    app = make_app(fake, max_batch_size=8, warmup=False)  # (a warm-up would find the limit first: next test)
    async with serve(app) as client:
        r = await client.post("/generate", json=body(0, num_samples=5, format="npy"))
    assert r.status_code == 200, r.text
    assert fake.sizes[:3] == [5, 4, 2] and set(fake.sizes[3:]) <= {1, 2}
    assert app.state.service.engine.slots == 2
    values = [np.load(io.BytesIO(base64.b64decode(it["data"]))).flat[0] for it in r.json()["items"]]
    assert values == [0.0, -1.0, -2.0, -3.0, -4.0]


async def test_out_of_memory_while_warming_up_keeps_the_shapes_that_fit(make_app):
    fake = FakeStepper(fail=lambda seeds: (torch.cuda.OutOfMemoryError("CUDA out of memory")
                                           if len(seeds) > 2 else None))
    app = make_app(fake, max_batch_size=8)
    async with serve(app) as client:
        assert (await client.post("/generate", json=body(0, num_samples=3))).status_code == 200
    assert app.state.service.engine.slots == 2 and fake.sizes == [2, 2, 2, 1, 1, 1]


async def test_shutdown_refuses_new_work_and_finishes_what_was_admitted(make_app):
    fake = FakeStepper(delay_s=0.02)
    app = make_app(fake, max_batch_size=1)
    service = app.state.service
    async with serve(app) as client:
        tasks = [asyncio.create_task(client.post("/generate", json=body(s))) for s in (1, 2, 3)]
        await wait_until(lambda: fake.entered.is_set() and service.worker.depth == 2)
        service.begin_shutdown()  # what SIGTERM does first
        refused = await client.post("/generate", json=body(4))
        assert refused.status_code == 503 and "shutting down" in refused.json()["message"]
        assert (await client.get("/readyz")).status_code == 503
        await service.stop()  # the lifespan shutdown: drains
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200, 200, 200]


async def test_jobs_run_in_chunks_between_denoising_steps(make_app, fake):
    app = make_app(fake, max_batch_size=2)
    worker = app.state.service.worker
    events: list[str] = []
    original = fake.step

    def step(pipe, rows, pad_to, cfg):
        events.append("step")
        original(pipe, rows, pad_to, cfg)

    fake.step = step

    def enrol():
        for k in range(3):
            events.append(f"chunk{k}")
            yield
        return "enrolled"

    async with serve(app) as client:
        fake.delay_s = 0.01
        fake.gate.clear()
        gen = asyncio.create_task(client.post("/generate", json=body(1, num_inference_steps=6)))
        await wait_until(fake.entered.is_set)
        job = worker.submit_job(enrol)
        fake.gate.set()
        assert await asyncio.wait_for(job, 5) == "enrolled"
        assert (await gen).status_code == 200
    first = events.index("chunk0")
    assert events[first:first + 6] == ["chunk0", "step", "chunk1", "step", "chunk2", "step"]  # interleaved
    assert app.state.service.metrics.job_chunks._value.get() == 3


async def test_the_job_queue_is_bounded_and_a_cancelled_job_stops(make_app, fake):
    app = make_app(fake)
    worker = app.state.service.worker
    worker.max_jobs = 1
    ran: list[int] = []

    def forever():
        while True:
            ran.append(1)
            yield

    async with serve(app):
        fut = worker.submit_job(forever)
        with pytest.raises(QueueFull):
            worker.submit_job(forever)
        await wait_until(lambda: len(ran) >= 3)
        fut.cancel()
        await wait_until(lambda: not worker._jobs)
        count = len(ran)
        await asyncio.sleep(0.05)
        assert len(ran) == count


async def test_a_request_queued_for_a_user_deleted_meanwhile_gets_404_not_500(make_app, fake):
    app = make_app(fake, max_batch_size=1)
    worker = app.state.service.worker
    async with serve(app) as client:
        first, queued = await hold_and_queue(client, fake, worker, body(2), depth=1)
        worker.remap_users(lambda i: None, UserGone("user 'x' was deleted while the request was queued"))
        fake.gate.set()
        r, ok = await queued, await first
    assert ok.status_code == 200
    assert r.status_code == 404 and r.json()["error"] == "unknown_user" and "deleted" in r.json()["message"]
    assert 2 not in fake.seeds_run
