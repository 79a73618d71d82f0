"""The Batcher on its own, with a recording run_batch: ordering, knobs, head cancellation, drain timeout."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.batcher import Batcher, BatchKey, QueueFull, ShuttingDown
from service.metrics import Metrics

pytestmark = pytest.mark.anyio
A, B = BatchKey(20, 2.0, "dpmsolver++"), BatchKey(20, 2.0, "ddim")


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[BatchKey, list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, key, users, seeds):
        self.batches.append((key, list(seeds)))
        self.gate.wait(10)
        return [s * 10 for s in seeds]


def make(run, **kw) -> Batcher:
    kw = {"max_batch_size": 4, "max_wait_s": 0.05, "max_queue": 16, **kw}
    return Batcher(run, ThreadPoolExecutor(1), metrics=Metrics(), **kw)


def test_knobs_are_validated_at_construction():
    for bad in ({"max_batch_size": 0}, {"max_queue": 0}, {"max_wait_s": -1}):
        with pytest.raises(ValueError):
            make(Recorder(), **bad)


async def test_oldest_sample_leads_and_results_come_back_in_request_order():
    rec = Recorder()
    b = make(rec, max_batch_size=3)
    rec.gate.clear()
    b.start()
    first = b.submit(A, 0, [1])
    while not rec.batches:
        await asyncio.sleep(0.005)
    jobs = [b.submit(B, 0, [2, 3]), b.submit(A, 0, [4, 5, 6, 7]), b.submit(B, 0, [8])]
    rec.gate.set()
    results = await asyncio.gather(first.future, *(j.future for j in jobs))
    assert results == [[10], [20, 30], [40, 50, 60, 70], [80]]
    assert rec.batches == [(A, [1]), (B, [2, 3, 8]), (A, [4, 5, 6]), (A, [7])]
    await b.close(1.0)


async def test_queue_bound_counts_samples_and_shutdown_refuses_intake():
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_queue=4, max_batch_size=1)
    b.submit(A, 0, [1, 2, 3])
    with pytest.raises(QueueFull) as info:
        b.submit(A, 0, [4, 5])
    assert info.value.retry_after_s >= 1 and info.value.depth == 3
    b.submit(A, 0, [4])
    b.begin_shutdown()
    with pytest.raises(ShuttingDown):
        b.submit(A, 0, [5])


async def test_cancelling_the_head_while_it_waits_starts_over_from_the_next_item():
    rec = Recorder()
    b = make(rec, max_batch_size=4, max_wait_s=0.3)
    b.start()
    head = b.submit(A, 0, [1])
    other = b.submit(B, 0, [2])
    await asyncio.sleep(0.05)
    b.cancel(head)  # the worker was waiting for A to fill up
    assert await asyncio.wait_for(other.future, 2) == [20]
    assert rec.batches == [(B, [2])]
    await b.close(1.0)


async def test_a_drain_that_runs_out_of_time_fails_leftovers_instead_of_losing_them():
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_batch_size=1)
    b.start()
    running = b.submit(A, 0, [1])
    queued = b.submit(A, 0, [2])
    while not rec.batches:
        await asyncio.sleep(0.005)
    await b.close(0.1)
    rec.gate.set()
    for job in (running, queued):
        with pytest.raises(ShuttingDown):
            job.future.result()
