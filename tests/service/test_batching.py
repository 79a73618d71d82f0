"""Step-level batching through the HTTP API: join/leave at step boundaries, mixing, fairness, splitting,
padding."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import numpy as np
import pytest

from tests.service.conftest import serve

pytestmark = pytest.mark.anyio


async def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def body(seed: int, **kw) -> dict:
    return {"user_id": "alice", "seed": seed, "num_inference_steps": 3, **kw}


async def test_a_short_request_joins_a_long_one_at_the_next_step_and_leaves_first(make_app, fake):
    app = make_app(fake, max_batch_size=4)
    worker = app.state.service.worker
    async with serve(app) as client:
        fake.delay_s = 0.05  # steps take time (after the warm-up, so admission still measured them as free)
        fake.gate.clear()  # hold the long request's first step
        long = asyncio.create_task(client.post("/generate", json=body(1, num_inference_steps=8)))
        await wait_until(fake.entered.is_set)
        short = asyncio.create_task(client.post("/generate", json=body(2, num_inference_steps=2)))
        await wait_until(lambda: worker.depth == 1)
        fake.gate.set()
        done, _ = await asyncio.wait({long, short}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {short}, "the 2-step request must not wait for the 8-step one"
        assert (await long).status_code == (await short).status_code == 200
    assert fake.calls[0]["seeds"] == [1]
    assert fake.calls[1]["seeds"] == [1, 2] and fake.calls[1]["at"] == [1, 0]  # joined at the next step
    assert fake.calls[3]["seeds"] == [1]  # left when its own 2 steps were done
    assert len(fake.calls) == 8


async def test_rows_with_different_steps_guidance_and_schedulers_share_steps(make_app, fake):
    # from idle, gather the burst before the first step
    app = make_app(fake, max_batch_size=8, max_wait_ms=200)
    async with serve(app) as client:
        variants = [{}, {"num_inference_steps": 4}, {"guidance_scale": 1.0}, {"scheduler": "ddim"}]
        responses = await asyncio.gather(
            *[client.post("/generate", json=body(10 + i, **v)) for i, v in enumerate(variants)])
    assert all(r.status_code == 200 for r in responses)
    first = fake.calls[0]
    assert sorted(first["seeds"]) == [10, 11, 12, 13]
    assert set(first["steps"]) == {3, 4} and set(first["guidance"]) == {1.0, 2.0}
    assert set(first["scheduler"]) == {"dpmsolver++", "ddim"}
    assert fake.sizes == [4, 4, 4, 1]


async def test_free_slots_go_round_robin_so_a_big_request_cannot_starve_a_small_one(make_app, fake):
    app = make_app(fake, max_batch_size=2)
    worker = app.state.service.worker
    async with serve(app) as client:
        fake.delay_s = 0.05
        fake.gate.clear()
        big = asyncio.create_task(
            client.post("/generate", json=body(100, num_samples=6, num_inference_steps=4))
        )
        await wait_until(fake.entered.is_set)
        small = asyncio.create_task(client.post("/generate", json=body(7, num_inference_steps=2)))
        await wait_until(lambda: worker.depth == 5)
        fake.gate.set()
        done, _ = await asyncio.wait({big, small}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {small}
        assert (await big).status_code == 200
    assert fake.calls[0]["seeds"] == [100, 101]
    assert fake.calls[1]["seeds"] == [100, 7] and fake.calls[2]["seeds"] == [100, 7]  # one slot each
    # the big request's row that lost its slot carried on from where it was
    assert fake.calls[3]["seeds"] == [100, 101] and fake.calls[3]["at"] == [3, 1]
    assert sum(c["seeds"].count(101) for c in fake.calls) == 4


async def test_a_large_request_is_split_across_slots_and_answered_in_seed_order(make_app, fake):
    app = make_app(fake, max_batch_size=4)
    async with serve(app) as client:
        r = await client.post("/generate", json=body(7, num_samples=10, format="npy"))
    assert r.status_code == 200, r.text
    assert fake.sizes == [4, 4, 4, 4, 4, 4, 2, 2, 2]
    items = r.json()["items"]
    assert [it["seed"] for it in items] == r.json()["seeds"] == list(range(7, 17))
    for it in items:  # the fake writes -(seed % 60) dB into every pixel of the seed's sample
        arr = np.load(io.BytesIO(base64.b64decode(it["data"])))
        assert arr.shape == (1, 32, 32) and np.all(arr == -(it["seed"] % 60))


async def test_padding_buckets_by_default_fixed_or_none_on_request(make_app, fake):
    for padding, pads in (("auto", [8, 8, 8]), ("fixed", [16, 16, 16]), ("none", [5, 5, 5])):
        fake.calls.clear()
        app = make_app(fake, max_batch_size=16, batch_padding=padding)
        async with serve(app) as client:
            r = await client.post("/generate", json=body(1, num_samples=5))
        assert r.status_code == 200
        assert [c["pad_to"] or len(c["seeds"]) for c in fake.calls] == pads, padding
        assert app.state.service.engine.padding == ("buckets" if padding == "auto" else padding)


async def test_a_lone_sample_waits_max_wait_from_idle_then_runs_alone(make_app, fake):
    app = make_app(fake, max_batch_size=8, max_wait_ms=300)
    async with serve(app) as client:
        r = await client.post("/generate", json=body(1))
    assert r.status_code == 200 and fake.sizes == [1, 1, 1]
    assert r.json()["timings"]["queue_ms"] >= 290


async def test_slot_occupancy_and_row_counters_follow_the_steps(make_app, fake):
    app = make_app(fake, max_batch_size=4)
    metrics = app.state.service.metrics
    async with serve(app) as client:
        fake.gate.clear()
        task = asyncio.create_task(client.post("/generate", json=body(1, num_samples=3)))
        await wait_until(fake.entered.is_set)
        assert metrics.slot_occupancy._value.get() == 0.75
        assert metrics.rows_joined._value.get() == 3
        fake.gate.set()
        assert (await task).status_code == 200
    assert metrics.rows_left.labels(reason="finished")._value.get() == 3
    samples = {s.name: s.value for s in metrics.step_seconds.collect()[0].samples}
    assert samples["dopplergen_step_seconds_count"] == 3
