"""The admission rule on its own (step costs set by hand: 422 when never, 429 under load, Retry-After) and the
fair share."""

from __future__ import annotations

import pytest

from service.engine import Engine, RowSpec
from service.metrics import Metrics
from service.rows import Overloaded, QueueFull, RequestRows, Slot, TooLong, fair_share
from service.settings import Settings
from service.worker import ADMIT_FRACTION, StepWorker

pytestmark = pytest.mark.anyio


def make_worker(tiny_pipe, step_s: dict[int, float], **kw) -> StepWorker:
    engine = Engine(Settings(pipeline="/nonexistent", max_batch_size=4), pipeline=tiny_pipe)
    engine.step_s, engine.decode_s = dict(step_s), 0.0
    kw = {"max_queue": 64, "request_timeout_s": 9.0 / ADMIT_FRACTION, **kw}  # budget 9 s
    return StepWorker(engine, Metrics(), **kw)


def spec(steps: int) -> RowSpec:
    return RowSpec(user_index=0, steps=steps, guidance=2.0, sampler="dpmsolver++")


async def test_alone_cost_uses_the_bucket_of_the_request_and_splits_beyond_the_slots(tiny_pipe):
    w = make_worker(tiny_pipe, {1: 0.01, 2: 0.012, 4: 0.02})
    w.submit(spec(800), [1])  # alone: 800 x 0.01 = 8 s <= 9 s
    w._live.clear()
    with pytest.raises(TooLong) as info:
        w.submit(spec(500), list(range(8)))  # 2 rounds of 4: 2 x 500 x 0.02 = 20 s
    assert info.value.estimate_s == pytest.approx(20.0)


async def test_backlog_over_the_budget_is_refused_with_the_excess_as_retry_after(tiny_pipe):
    w = make_worker(tiny_pipe, {1: 0.01, 2: 0.012, 4: 0.02})  # full slots: 4 rows / 0.02 s = 200 row-steps/s
    for s in range(4):
        w.submit(spec(400), [s])  # W = 1600 row-steps = 8 s of work
    with pytest.raises(Overloaded) as info:
        w.submit(spec(400), [9])  # (1600 + 400) / 200 = 10 s > 9 s
    assert info.value.estimate_s == pytest.approx(10.0) and info.value.retry_after_s == 1
    w.submit(spec(100), [10])  # (1600 + 100) / 200 = 8.5 s: admitted
    assert len(w._live) == 5


async def test_queued_or_running_device_jobs_count_in_admission(tiny_pipe):
    """While an enrolment (a device job) waits or runs it may take JOB_SHARE of the device: the estimate
    counts each step at c / (1 - JOB_SHARE) plus one chunk, so a request that fits on an idle device is
    refused (429) while a job waits."""
    from service.worker import JOB_SHARE

    w = make_worker(tiny_pipe, {1: 0.01, 2: 0.012, 4: 0.02})
    w.chunk_s = 0.02  # a measured chunk
    for s in range(4):
        w.submit(spec(250), [s])  # W = 1000 row-steps: 5 s of work on an idle device
    w._jobs.append(object())  # a job queued (what submit_job appends)
    with pytest.raises(Overloaded) as info:
        w.submit(spec(200), [9])  # (1000 + 200) / 4 x 0.02 x 1.5 + 0.02 = 9.02 s > 9 s
    assert info.value.estimate_s == pytest.approx(1200 / 4 * 0.02 / (1 - JOB_SHARE) + 0.02)
    w._jobs.clear()
    w.submit(spec(200), [11])  # no job: (1000 + 200) / 200 = 6 s, admitted


async def test_nothing_measured_admits_and_the_queue_bound_still_holds(tiny_pipe):
    w = make_worker(tiny_pipe, {}, max_queue=3)
    w.submit(spec(1000), [1, 2])
    with pytest.raises(QueueFull):
        w.submit(spec(1), [3, 4])
    w.submit(spec(1000), [3])


def test_fair_share_goes_round_robin_oldest_first_and_prefers_rows_further_along():
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        big, small, late = (RequestRows(spec(5), list(range(n)), loop.create_future()) for n in (6, 1, 2))
        live = [Slot(big, k) for k in range(6)] + [Slot(small, 0)] + [Slot(late, k) for k in range(2)]
        live[3].row = type("R", (), {"i": 2})()  # big's row 3 already took two steps
        chosen = fair_share(live, 4)
        assert [(s.req, s.k) for s in chosen] == [(big, 3), (big, 0), (small, 0), (late, 0)]
        assert len(fair_share(live, 100)) == 9 and fair_share(live, 1) == [live[3]]
    finally:
        loop.close()
