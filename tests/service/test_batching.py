"""The batcher through the HTTP API: batch formation, splitting, compatibility, 429, 504, disconnects, shutdown."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import numpy as np
import pytest
import torch

from tests.service.conftest import FakeSampler, serve

pytestmark = pytest.mark.anyio


async def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def body(seed: int, **kw) -> dict:
    return {"user_id": "alice", "seed": seed, "num_inference_steps": 3, **kw}


def rejections(app, reason: str) -> float:
    return app.state.service.metrics.rejections.labels(reason=reason)._value.get()


async def test_concurrent_requests_form_full_batches_then_a_partial_one(make_app, fake):
    app = make_app(fake, max_batch_size=4, max_wait_ms=50)
    batcher = app.state.service.batcher
    async with serve(app) as client:
        fake.gate.clear()  # hold the first batch on the device until all ten requests are queued
        tasks = [asyncio.create_task(client.post("/generate", json=body(100 + i))) for i in range(10)]
        await wait_until(lambda: fake.entered.is_set() and batcher.depth == 6)
        assert fake.sizes == [4]
        fake.gate.set()
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200] * 10
    assert fake.sizes == [4, 4, 2]
    assert {c["pad_to"] for c in fake.calls} == {4}  # fixed padding (the CPU default) at max_batch_size
    assert [r.json()["seeds"] for r in responses] == [[100 + i] for i in range(10)]
    hist = app.state.service.metrics.batch_size.collect()[0].samples
    assert {s.name: s.value for s in hist if s.name.endswith(("_count", "_sum"))} == {
        "dopplergen_batch_size_count": 3.0, "dopplergen_batch_size_sum": 10.0}


async def test_only_compatible_samples_share_a_batch(make_app, fake):
    app = make_app(fake, max_batch_size=8, max_wait_ms=50)
    batcher = app.state.service.batcher
    async with serve(app) as client:
        fake.gate.clear()
        blocker = asyncio.create_task(client.post("/generate", json=body(0, num_inference_steps=9)))
        await wait_until(fake.entered.is_set)
        variants = [{}, {"num_inference_steps": 4}, {"guidance_scale": 1.0}, {"scheduler": "ddim"}, {},
                    {"num_inference_steps": 4}]
        tasks = [asyncio.create_task(client.post("/generate", json=body(10 + i, **v))) for i, v in enumerate(variants)]
        await wait_until(lambda: batcher.depth == 6)
        fake.gate.set()
        responses = await asyncio.gather(blocker, *tasks)
    assert all(r.status_code == 200 for r in responses)
    # Arrival order of concurrent requests is up to the event loop; the grouping is not.
    batches = sorted(((c["steps"], c["guidance"], c["scheduler"]), sorted(c["seeds"])) for c in fake.calls[1:])
    assert batches == [
        ((3, 1.0, "dpmsolver++"), [12]),
        ((3, 2.0, "ddim"), [13]),
        ((3, 2.0, "dpmsolver++"), [10, 14]),
        ((4, 2.0, "dpmsolver++"), [11, 15]),
    ]


async def test_a_large_request_is_split_across_batches_in_order(make_app, fake):
    app = make_app(fake, max_batch_size=4)
    async with serve(app) as client:
        r = await client.post("/generate", json=body(7, num_samples=10, format="npy"))
    assert r.status_code == 200, r.text
    assert fake.sizes == [4, 4, 2]
    items = r.json()["items"]
    assert [it["seed"] for it in items] == r.json()["seeds"] == list(range(7, 17))
    for it in items:  # the fake writes -(seed % 60) dB into every pixel of the seed's sample
        arr = np.load(io.BytesIO(base64.b64decode(it["data"])))
        assert arr.shape == (1, 32, 32) and np.all(arr == -(it["seed"] % 60))


async def test_a_lone_sample_waits_max_wait_then_runs_alone(make_app, fake):
    app = make_app(fake, max_batch_size=8, max_wait_ms=300)
    async with serve(app) as client:
        r = await client.post("/generate", json=body(1))
    assert r.status_code == 200 and fake.sizes == [1]
    assert r.json()["timings"]["queue_ms"] >= 290


async def test_queue_full_answers_429_immediately_with_retry_after(make_app):
    fake = FakeSampler(delay_s=0.5)  # a deliberately slow step
    app = make_app(fake, max_batch_size=1, max_queue=2, max_samples_per_request=2)
    batcher = app.state.service.batcher
    async with serve(app) as client:
        running = asyncio.create_task(client.post("/generate", json=body(1)))
        await wait_until(fake.entered.is_set)
        queued = asyncio.create_task(client.post("/generate", json=body(2, num_samples=2)))
        await wait_until(lambda: batcher.depth == 2)
        t0 = time.monotonic()
        r = await client.post("/generate", json=body(9))
        elapsed = time.monotonic() - t0
        assert r.status_code == 429 and r.json()["error"] == "queue_full"
        assert elapsed < 0.3, "429 must not wait for room"
        assert int(r.headers["retry-after"]) >= 1
        assert [x.status_code for x in await asyncio.gather(running, queued)] == [200, 200]
    assert rejections(app, "queue_full") == 1
    assert 9 not in fake.seeds_run


async def test_timeout_answers_504_and_its_queued_work_never_runs(make_app):
    fake = FakeSampler(delay_s=0.6)  # slower than the request timeout
    app = make_app(fake, max_batch_size=1, request_timeout_s=0.3)
    async with serve(app) as client:
        first = asyncio.create_task(client.post("/generate", json=body(1)))
        await wait_until(fake.entered.is_set)
        second = await client.post("/generate", json=body(2))  # queued behind the slow batch
        assert second.status_code == 504 and second.json()["error"] == "timeout"
        assert (await first).status_code == 504  # its batch was already on the device: it finishes, unread
        await asyncio.sleep(0.5)  # the device is free again; the dropped sample must not start
    assert fake.seeds_run == {1}
    assert rejections(app, "timeout") == 2


def _scope(path: str, body_bytes: bytes) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body_bytes)).encode())],
        "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    }


async def test_a_client_that_disconnects_has_its_queued_work_dropped(make_app, fake):
    app = make_app(fake, max_batch_size=1)
    batcher = app.state.service.batcher
    async with serve(app) as client:
        fake.gate.clear()
        first = asyncio.create_task(client.post("/generate", json=body(1)))
        await wait_until(fake.entered.is_set)
        # A raw ASGI call whose client hangs up while its sample waits in the queue.
        payload, gone, sent = json.dumps(body(2)).encode(), asyncio.Event(), []
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
        await wait_until(lambda: batcher.depth == 1)
        gone.set()
        await asyncio.wait_for(call, 5)
        assert batcher.depth == 0
        fake.gate.set()
        assert (await first).status_code == 200
        await asyncio.sleep(0.05)
    assert fake.seeds_run == {1}
    assert rejections(app, "disconnected") == 1
    assert sent[0]["status"] == 499


async def test_a_cancelled_request_task_has_its_queued_work_dropped(make_app, fake):
    app = make_app(fake, max_batch_size=1)
    batcher = app.state.service.batcher
    async with serve(app) as client:
        fake.gate.clear()
        first = asyncio.create_task(client.post("/generate", json=body(1)))
        await wait_until(fake.entered.is_set)
        doomed = asyncio.create_task(client.post("/generate", json=body(2, num_samples=3)))
        await wait_until(lambda: batcher.depth == 3)
        doomed.cancel()  # ASGITransport runs the app in this task: the handler sees the cancellation
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert batcher.depth == 0
        fake.gate.set()
        await first
    assert fake.seeds_run == {1}


async def test_a_failing_batch_fails_only_its_requests_and_the_worker_lives_on(make_app):
    fake = FakeSampler(fail=lambda seeds: RuntimeError("boom") if 13 in seeds else None)
    app = make_app(fake, max_batch_size=4, max_wait_ms=200)
    async with serve(app) as client:
        bad = await asyncio.gather(*[client.post("/generate", json=body(s)) for s in (13, 14)])
        good = await client.post("/generate", json=body(20))
    assert fake.sizes == [2, 1]
    for r in bad:
        assert r.status_code == 500
        # the body names no exception (the log does): one generic 500 message
        assert r.json() == {"error": "batch_failed", "message": "internal server error; the server log has the details"}
    assert good.status_code == 200
    assert app.state.service.metrics.batch_failures._value.get() == 1


async def test_out_of_memory_splits_the_batch_and_retries(make_app):
    fake = FakeSampler(fail=lambda seeds: torch.cuda.OutOfMemoryError("CUDA out of memory") if len(seeds) > 2 else None)
    app = make_app(fake, max_batch_size=8)
    async with serve(app) as client:
        r = await client.post("/generate", json=body(0, num_samples=5, format="npy"))
    assert r.status_code == 200, r.text
    # padded 5->8 fails, unpadded 5 fails, then halves: 2 ok, 3 fails -> 1 + 2
    assert fake.sizes == [5, 5, 2, 3, 1, 2]
    assert [c["pad_to"] for c in fake.calls] == [8, None, None, None, None, None]
    values = [np.load(io.BytesIO(base64.b64decode(it["data"]))).flat[0] for it in r.json()["items"]]
    assert values == [0.0, -1.0, -2.0, -3.0, -4.0]


async def test_shutdown_refuses_new_work_and_finishes_what_was_queued(make_app):
    fake = FakeSampler(delay_s=0.1)
    app = make_app(fake, max_batch_size=1)
    service = app.state.service
    async with serve(app) as client:
        tasks = [asyncio.create_task(client.post("/generate", json=body(s))) for s in (1, 2, 3)]
        await wait_until(lambda: fake.entered.is_set() and service.batcher.depth == 2)
        service.begin_shutdown()  # what SIGTERM does first
        refused = await client.post("/generate", json=body(4))
        assert refused.status_code == 503 and "shutting down" in refused.json()["message"]
        assert (await client.get("/readyz")).status_code == 503
        await service.stop()  # the lifespan shutdown: drains the queue
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert fake.seeds_run == {1, 2, 3}
