"""Step-level (continuous) batching: one device thread steps a set of slots; rows join and leave at step
boundaries.

A request becomes one row per sample (its seed, user, steps, guidance and sampler). Before every denoising
step the worker picks the rows that run:
- **Fairness.** Free slots go round-robin over requests in arrival order, one row each per round, so the
  oldest waiting rows go first and a request with many rows cannot starve short ones. A row that loses its
  slot keeps its state (latent, sampler history, generator) and carries on later from where it was.
- **Join and leave.** A row joins at the next step boundary; it leaves when its own schedule ends (it is
  decoded at once, with the rows that finished at the same step; alone with fixed padding) or when its
  request is cancelled.
- **Cancellation.** A request that times out, whose client disconnects or whose task is cancelled is
  flagged; its rows are dropped before the next step.
- **Admission** (at submit, on the event loop, never blocking): with s = steps, n = samples, S = slots and
  c(b) = the measured wall time of a step at batch b, a request alone needs ceil(n/S) * s * c(min(n, S)).
  If that exceeds 0.8 x request_timeout_s it could never finish: `TooLong` (HTTP 422). Otherwise the
  work ahead is every live row's remaining steps W; at full occupancy the device does S / c(S) row-steps a
  second, so the request is estimated done after max(alone, (W + n s) c(S) / S) (+ decodes). Beyond
  0.8 x request_timeout_s the load is the reason: `Overloaded` (HTTP 429, Retry-After = the excess).
  More than max_queue rows waiting for a slot is `QueueFull` (HTTP 429). While device jobs are queued or
  running they take up to JOB_SHARE of the device time (below), so each step is counted at c / (1 -
  JOB_SHARE) plus one chunk: a request admitted then still finishes in time.
- **Jobs.** `submit_job(make_steps)` runs other device work (e.g. enrolment's optimisation) interleaved
  with generation: `make_steps()` is called on the device thread and must return an iterator; each
  `next()` is one bounded chunk (one optimisation step), run between two denoising steps (back to back
  when no rows are live). While rows are live, a chunk runs only once the steps since the last one took
  (1 - JOB_SHARE) / JOB_SHARE times the chunk's measured time: generation keeps most of the device. The
  iterator's return value resolves the returned future; at most `max_jobs` jobs wait (more raise
  QueueFull), oldest first. Cancelling the future stops the job before its next
  chunk (the generator is closed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from service.engine import Engine, RowSpec
from service.metrics import Metrics
from service.rows import (
    BatchFailed,
    DeviceJob,
    Overloaded,
    QueueFull,
    RequestRows,
    ShuttingDown,
    Slot,
    TooLong,
    fail,
    fair_share,
    resolve,
)

log = logging.getLogger("dopplergen.worker")
# the share of device time device jobs (enrolments, deletions) may take while generation requests are live:
# a third slows a request by ~1.5x during an enrolment (benchmarks/enrol_speed.py --steady)
JOB_SHARE = 1 / 3
# admit only work estimated to finish within this share of request_timeout_s (the estimate
ADMIT_FRACTION = 0.8
# leaves out HTTP, encoding and CPU contention: measured at 0.9, a 10 s budget let 9 of 192 bursty requests
# time out)


class StepWorker:
    """Slots on one device, stepped one denoising step at a time by the engine's thread."""

    def __init__(self, engine: Engine, metrics: Metrics, *, max_queue: int, request_timeout_s: float,
                 max_wait_s: float = 0.0, max_jobs: int = 8) -> None:
        if max_queue < 1 or request_timeout_s <= 0 or max_wait_s < 0 or max_jobs < 1:
            raise ValueError("max_queue and max_jobs must be >= 1, request_timeout_s > 0, max_wait_s >= 0")
        self.engine, self.metrics = engine, metrics
        self.max_queue, self.budget_s, self.max_wait_s, self.max_jobs = (
            max_queue, ADMIT_FRACTION * request_timeout_s, max_wait_s, max_jobs)
        self._live: list[Slot] = []  # every unfinished row, in arrival order
        self._running: set[Slot] = set()  # rows in a slot at the last step
        self._jobs: list[DeviceJob] = []
        self.chunk_s = 0.0  # running estimate of one job chunk's wall time (0 before any ran)
        self._owed_s = 0.0  # step time since the last chunk (JOB_SHARE)
        self._cv = threading.Condition()
        self._accepting, self._stop, self._started = True, False, False
        self._exited = threading.Event()

    # ---- event-loop side --------------------------------------------------------------------------------
    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def depth(self) -> int:
        """Rows waiting for a slot (not counting those in one)."""
        return len(self._live) - len(self._running)

    def submit(self, spec: RowSpec, seeds: Sequence[int]) -> RequestRows:
        """Admit a request's rows, or raise ShuttingDown / QueueFull / TooLong / Overloaded at once."""
        if not self._accepting:
            raise ShuttingDown("shutting down: not accepting new work")
        req = RequestRows(spec, [int(s) for s in seeds], asyncio.get_running_loop().create_future())
        with self._cv:
            self._admit(spec, len(req.seeds))
            self._live.extend(Slot(req, k) for k in range(len(req.seeds)))
            self._cv.notify()
        self.metrics.queue_depth.set(self.depth)
        return req

    def cancel(self, req: RequestRows, reason: str) -> None:
        """Drop the request's rows before the next step (client gone, timed out, shutting down)."""
        if req.cancelled or (req.future.done() and not req.future.cancelled()):
            return  # already dropped, or already answered
        req.cancelled = True
        self.metrics.cancellations.labels(reason=reason).inc()
        if not req.future.done():
            req.future.cancel()
        with self._cv:
            self._cv.notify()

    def submit_job(self, make_steps: Callable[[], Iterator[Any]]) -> asyncio.Future:
        """Queue device work run in chunks between denoising steps (see the module docstring)."""
        if not self._accepting:
            raise ShuttingDown("shutting down: not accepting new work")
        job = DeviceJob(make_steps, asyncio.get_running_loop().create_future())
        with self._cv:
            if len(self._jobs) >= self.max_jobs:
                raise QueueFull(30, len(self._jobs), self.max_jobs,
                                "device jobs (enrolments, deletions) queued or running")
            self._jobs.append(job)
            self._cv.notify()
        return job.future

    def remap_users(self, new_index: Callable[[int], int | None], gone: Exception) -> None:
        """After users left the encoder: queued rows' user index -> `new_index(i)`; None fails the request
        with `gone`.

        Rows that already started keep the conditioning they started with."""
        with self._cv:
            queued = {s.req for s in self._live if s.row is None}
            failed = [s for s in self._live if s.req in queued and new_index(s.req.spec.user_index) is None]
            for req in queued - {s.req for s in failed}:
                req.spec = dataclasses.replace(req.spec, user_index=new_index(req.spec.user_index))
        self._fail_requests(failed, gone)

    def _admit(self, spec: RowSpec, n: int) -> None:
        """The admission rule of the module docstring (called with the lock held)."""
        waiting = len(self._live) - len(self._running)
        slots, full, one = (self.engine.slots, self.engine.est_step_s(self.engine.slots),
                            self.engine.est_step_s(n))
        if waiting + n > self.max_queue and waiting > 0:
            raise QueueFull(
                self._retry_after(waiting * spec.steps * (full or 1.0) / slots), waiting, self.max_queue
            )
        if full is None or one is None:
            return  # nothing measured yet (no warm-up): admit
        decode = self.engine.decode_s
        alone = math.ceil(n / slots) * spec.steps * one + n * decode
        if alone > self.budget_s:
            raise TooLong(alone, self.budget_s)
        ahead = sum(s.left for s in self._live)
        # jobs waiting: they take up to JOB_SHARE of the device, plus one chunk at most before the next step
        slow, chunk = (1 / (1 - JOB_SHARE), self.chunk_s) if self._jobs else (1.0, 0.0)
        backlog = (ahead + n * spec.steps) * full * slow / slots + (len(self._live) + n) * decode
        estimate = max(alone * slow, backlog) + chunk
        if estimate > self.budget_s:
            raise Overloaded(self._retry_after(estimate - self.budget_s), estimate, self.budget_s)

    @staticmethod
    def _retry_after(seconds: float) -> int:
        return int(min(60, max(1, math.ceil(seconds))))

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the step loop on the engine's device thread (after load and warm-up, which ran there too)."""
        self._started = True
        self.engine.executor.submit(self._run)

    def begin_shutdown(self) -> None:
        """Stop intake. Only flips a flag, so it is safe to call from a signal handler."""
        self._accepting = False

    async def close(self, drain_timeout_s: float) -> None:
        """Stop intake, let live rows finish (up to drain_timeout_s), then fail whatever is left: never
        dropped."""
        self._accepting = False
        deadline = time.monotonic() + drain_timeout_s
        while self._started and (self._live or self._jobs) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._started:
            await asyncio.get_running_loop().run_in_executor(None, self._exited.wait, 5.0)
        with self._cv:
            left, jobs = dict.fromkeys(s.req for s in self._live), list(self._jobs)
            self._live.clear()
            self._jobs.clear()
        if left:
            log.error("drain ended with %d requests unfinished; failing them", len(left))
        for req in left:
            fail(req.future, ShuttingDown("shutting down: the server stopped before this request finished"))
        for job in jobs:
            fail(job.future, ShuttingDown("shutting down: the server stopped before this job finished"))
        self.metrics.queue_depth.set(0)

    # ---- the device thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    if not self._live:
                        self.metrics.slot_occupancy.set(0.0)
                    while not self._stop and not self._live and not self._jobs:
                        self._cv.wait()
                    if self._stop:
                        return
                    idle = not self._running
                if idle and self._live and self.max_wait_s:
                    time.sleep(self.max_wait_s)  # let a burst arrive before the first step
                try:
                    self._turn()
                except Exception:  # a bug here must not leave every later request waiting for a dead worker
                    log.exception("worker error; carrying on")
        finally:
            self._exited.set()

    def _turn(self) -> None:
        """One step over the chosen rows, then one chunk of the oldest job when its share allows."""
        with self._cv:
            self._drop_cancelled()
            chosen = fair_share(self._live, self.engine.slots)
            self._running = set(chosen)
        self.metrics.queue_depth.set(self.depth)
        self.metrics.slot_occupancy.set(len(chosen) / self.engine.slots if chosen else 0.0)
        if chosen:
            t0 = time.perf_counter()
            self._step(chosen)
            self._owed_s += time.perf_counter() - t0
        if not chosen or self._owed_s * JOB_SHARE >= self.chunk_s * (1 - JOB_SHARE):
            self._owed_s = 0.0
            self._job_chunk()

    def _drop_cancelled(self) -> None:
        gone = [s for s in self._live if s.req.cancelled]
        if gone:
            self._live = [s for s in self._live if not s.req.cancelled]
            self.metrics.rows_left.labels(reason="cancelled").inc(len(gone))

    def _step(self, chosen: list[Slot]) -> None:
        now = time.monotonic()
        for s in chosen:
            if s.row is None:
                try:
                    s.row = self.engine.start(s.req.spec, s.req.seeds[s.k])
                except Exception as exc:
                    self._fail_requests(
                        [s], BatchFailed(f"could not start: {type(exc).__name__}: {exc}"[:300])
                    )
                    continue
                self.metrics.rows_joined.inc()
                self.metrics.queue_wait.observe(now - s.req.submitted_at)
                s.req.started_at = s.req.started_at or now
                s.req.joined_at = now
        chosen = [s for s in chosen if s.row is not None and not s.req.cancelled and not s.req.future.done()]
        if not chosen:
            return
        try:
            elapsed = self.engine.step([s.row for s in chosen])
        except torch.cuda.OutOfMemoryError:
            if self.engine.shrink():
                return  # the rows are untouched; the next turn runs fewer of them
            self._fail_requests(chosen, BatchFailed("generation failed: out of device memory"))
            return
        except Exception as exc:  # one bad step fails its own requests; the worker lives on
            log.error("step over %d rows failed", len(chosen), exc_info=True)
            self.metrics.batch_failures.inc()
            self._fail_requests(chosen, BatchFailed(f"generation failed: {type(exc).__name__}: {exc}"[:300]))
            return
        self.metrics.step_seconds.observe(elapsed)
        self.metrics.batch_size.observe(len(chosen))
        finished = [s for s in chosen if s.row.done]
        if finished:
            self._finish(finished)

    def _finish(self, done: list[Slot]) -> None:
        """Decode the rows whose schedule just ended (together; alone with fixed padding) and answer their
        requests."""
        try:
            results = self.engine.finish([s.row for s in done])
        except Exception as exc:
            log.error("decode failed", exc_info=True)
            self._fail_requests(done, BatchFailed(f"decode failed: {type(exc).__name__}: {exc}"[:300]))
            return
        with self._cv:
            gone = set(done)
            self._live = [s for s in self._live if s not in gone]
            self._running.difference_update(done)
        self.metrics.rows_left.labels(reason="finished").inc(len(done))
        self.metrics.samples.inc(len(done))
        for s, result in zip(done, results, strict=True):
            req = s.req
            req.results[s.k] = result
            req.remaining -= 1
            if req.remaining == 0:
                req.done_at = time.monotonic()
                self.metrics.inference.observe(req.inference_s)
                resolve(req.future, req.results)

    def _fail_requests(self, slots: list[Slot], exc: Exception) -> None:
        reqs = dict.fromkeys(s.req for s in slots)
        with self._cv:
            gone = [s for s in self._live if s.req in reqs]
            self._live = [s for s in self._live if s.req not in reqs]
            self._running.difference_update(gone)
        self.metrics.rows_left.labels(reason="failed").inc(len(gone))
        for req in reqs:
            req.cancelled = True
            fail(req.future, exc)

    def _job_chunk(self) -> None:
        with self._cv:
            job = self._jobs[0] if self._jobs else None
        if job is None:
            return
        try:
            if job.future.done():  # cancelled by its owner
                raise GeneratorExit
            t0 = time.perf_counter()
            if job.it is None:
                job.it = iter(job.make_steps())
            next(job.it)
            took = time.perf_counter() - t0
            self.chunk_s = took if not self.chunk_s else 0.8 * self.chunk_s + 0.2 * took
            self.metrics.job_chunks.inc()
            return
        except GeneratorExit:
            if job.it is not None and hasattr(job.it, "close"):
                job.it.close()
        except StopIteration as stop:
            resolve(job.future, stop.value)
        except Exception as exc:
            log.error("job failed", exc_info=True)
            fail(job.future, exc)
        with self._cv:
            self._jobs.remove(job)
