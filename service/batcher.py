"""Dynamic batching: requests become per-sample items in one bounded queue, drained by a single device worker.

A batch takes the oldest queued sample and every compatible sample behind it (same steps, guidance and
scheduler) up to `max_batch_size`; it closes when full or `max_wait_s` after that oldest sample arrived.
A request with more samples than fit is split across batches and answered when its last sample is done.
The model runs on a dedicated executor thread, so the event loop keeps serving while a batch runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from service.metrics import Metrics

log = logging.getLogger("dopplergen.batcher")


class QueueFull(Exception):
    """The bounded queue has no room for this request's samples."""

    def __init__(self, retry_after_s: int, depth: int, capacity: int) -> None:
        super().__init__(f"queue full: {depth} of {capacity} samples queued")
        self.retry_after_s, self.depth, self.capacity = retry_after_s, depth, capacity


class ShuttingDown(Exception):
    """Intake has stopped (shutdown), or the drain ran out of time before this request ran."""


class BatchFailed(Exception):
    """The batch holding some of this request's samples raised; other batches are unaffected."""


@dataclass(frozen=True)
class BatchKey:
    """Samples may share a forward pass only when these match."""

    num_inference_steps: int
    guidance_scale: float
    scheduler: str


# Runs on the device thread: (key, user indices, seeds) -> one result per sample, in order.
RunBatch = Callable[[BatchKey, list[int], list[int]], Sequence[Any]]


class Job:
    """One request's samples; results fill in as their batches finish, then `future` resolves to the list."""

    def __init__(self, key: BatchKey, seeds: Sequence[int], future: asyncio.Future) -> None:
        self.key = key
        self.seeds = list(seeds)
        self.results: list[Any] = [None] * len(self.seeds)
        self.remaining = len(self.seeds)
        self.future = future
        self.cancelled = False
        self.submitted_at = time.monotonic()
        self.queue_s = 0.0  # longest wait of any of its samples before their batch started
        self.inference_s = 0.0  # summed wall time of the batches it took part in


@dataclass(eq=False)
class _Item:
    job: Job
    slot: int  # position within the request
    user_index: int
    seed: int
    enqueued_at: float


class Batcher:
    """Bounded queue of per-sample items -> batches of compatible items -> one worker on one device."""

    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        metrics: Metrics,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and max_wait_s >= 0")
        self._run_batch, self._executor, self.metrics = run_batch, executor, metrics
        self.max_batch_size, self.max_wait_s, self.max_queue = max_batch_size, max_wait_s, max_queue
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._accepting = True
        self._closing = False
        self._worker: asyncio.Task | None = None
        self._inflight: list[_Item] = []
        self._batch_s: float | None = None  # moving average of batch wall time, for Retry-After

    # ---- intake ---------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Queued samples (not counting the batch on the device)."""
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def submit(self, key: BatchKey, user_index: int, seeds: Sequence[int]) -> Job:
        """Queue one request's samples, or raise QueueFull / ShuttingDown at once (never blocks)."""
        if not self._accepting:
            raise ShuttingDown("shutting down: not accepting new work")
        if self.depth + len(seeds) > self.max_queue:
            raise QueueFull(self.retry_after_s(), self.depth, self.max_queue)
        job = Job(key, seeds, asyncio.get_running_loop().create_future())
        self._queue.extend(_Item(job, i, user_index, int(s), job.submitted_at) for i, s in enumerate(job.seeds))
        self._changed()
        return job

    def cancel(self, job: Job) -> None:
        """Drop a job's queued samples (client gone, timed out); a batch already on the device runs to the end."""
        if job.cancelled:
            return
        job.cancelled = True
        self._remove(job)
        if not job.future.done():
            job.future.cancel()

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained one request's worth: batches ahead x recent batch time."""
        batches_ahead = self.depth / self.max_batch_size + 1
        return int(min(60, max(1, math.ceil(batches_ahead * (self._batch_s or 1.0)))))

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="dopplergen-batcher")

    def begin_shutdown(self) -> None:
        """Stop intake. Only flips a flag, so it is safe to call from a signal handler."""
        self._accepting = False

    async def close(self, drain_timeout_s: float) -> None:
        """Stop intake, run what is queued, then stop the worker; whatever is left is failed, never dropped."""
        self._accepting = False
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), drain_timeout_s)
            except asyncio.TimeoutError:
                log.error("drain timed out after %.1fs; failing %d queued samples", drain_timeout_s, self.depth)
                self._worker.cancel()
                try:
                    await self._worker
                except asyncio.CancelledError:
                    pass
        leftover = dict.fromkeys(it.job for it in [*self._inflight, *self._queue])
        for job in leftover:
            self._fail(job, ShuttingDown("shutting down: the server stopped before this request ran"))
        self._queue.clear()
        self._changed()

    # ---- the worker -------------------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            try:
                batch = await self._next_batch()
                if batch is None:
                    return
                await self._execute(batch)
            except Exception:  # a bug here must not leave every later request waiting for a dead worker
                log.exception("batcher worker error; carrying on")

    async def _next_batch(self) -> list[_Item] | None:
        """Wait for the oldest item's batch to fill or its max_wait to pass; None once closed and drained."""
        while True:
            if not self._queue:
                if self._closing:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = self._queue[0]
            deadline = head.enqueued_at + self.max_wait_s
            while not self._closing and self._queue and self._queue[0] is head:
                if self._count(head.job.key) >= self.max_batch_size:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            if not self._queue or self._queue[0] is not head:
                continue  # the head was cancelled while we waited: start over from the new head
            return self._take(head.job.key)

    async def _execute(self, batch: list[_Item]) -> None:
        key, n = batch[0].job.key, len(batch)
        started = time.monotonic()
        for it in batch:
            wait = started - it.enqueued_at
            self.metrics.queue_wait.observe(wait)
            it.job.queue_s = max(it.job.queue_s, wait)
        self._inflight = batch
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_batch, key, [it.user_index for it in batch], [it.seed for it in batch]
            )
            if len(out) != n:
                raise RuntimeError(f"the sampler returned {len(out)} results for {n} samples")
        except Exception as exc:  # one bad batch fails its own requests; the worker lives on
            self._inflight = []
            self.metrics.batch_failures.inc()
            log.error("batch of %d samples (%d steps, %s) failed", n, key.num_inference_steps, key.scheduler, exc_info=True)
            err = BatchFailed(f"generation failed: {type(exc).__name__}: {exc}"[:300])
            for job in dict.fromkeys(it.job for it in batch):
                self._fail(job, err)
            return
        # (On cancellation, close() still finds the batch in _inflight and fails its requests.)
        self._inflight = []
        elapsed = time.monotonic() - started
        self._batch_s = elapsed if self._batch_s is None else 0.8 * self._batch_s + 0.2 * elapsed
        self.metrics.inference.observe(elapsed)
        self.metrics.batch_size.observe(n)
        self.metrics.samples.inc(n)
        log.debug("batch of %d samples (%d steps, %s) in %.3fs", n, key.num_inference_steps, key.scheduler, elapsed)
        for it, result in zip(batch, out, strict=True):
            if not it.job.future.done():
                it.job.results[it.slot] = result
                it.job.remaining -= 1
        for job in dict.fromkeys(it.job for it in batch):
            job.inference_s += elapsed
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(job.results)

    # ---- queue helpers ----------------------------------------------------------------------------------
    def _count(self, key: BatchKey) -> int:
        n = 0
        for it in self._queue:
            if it.job.key == key:
                n += 1
                if n >= self.max_batch_size:
                    break
        return n

    def _take(self, key: BatchKey) -> list[_Item]:
        batch: list[_Item] = []
        rest: deque[_Item] = deque()
        for it in self._queue:
            (batch if len(batch) < self.max_batch_size and it.job.key == key else rest).append(it)
        self._queue = rest
        self._changed()
        return batch

    def _remove(self, job: Job) -> None:
        before = len(self._queue)
        self._queue = deque(it for it in self._queue if it.job is not job)
        if len(self._queue) != before:
            self._changed()

    def _fail(self, job: Job, exc: Exception) -> None:
        job.cancelled = True
        self._remove(job)
        if not job.future.done():
            job.future.set_exception(exc)

    def _changed(self) -> None:
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
