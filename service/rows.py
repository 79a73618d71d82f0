"""What the step worker schedules: a request's rows (slots), device jobs, and the errors a request can meet.

The errors are the service's domain exceptions, raised by the worker and the enrolment manager; each gets
one HTTP answer wherever it is raised, mapped in service.errors (DOMAIN_ERRORS). An error's
`retry_after_s`, where it has one, becomes the Retry-After header."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from service.engine import RowSpec


class QueueFull(Exception):
    """More rows are waiting for a slot than max_queue allows (or the job queue is full)."""

    def __init__(self, retry_after_s: int, depth: int, capacity: int, what: str = "samples waiting") -> None:
        super().__init__(f"queue full: {depth} of {capacity} {what}; retry after {retry_after_s}s")
        self.retry_after_s, self.depth, self.capacity = retry_after_s, depth, capacity


class Overloaded(Exception):
    """The work ahead would not let this request finish within request_timeout_s now; later it would."""

    def __init__(self, retry_after_s: int, estimate_s: float, budget_s: float) -> None:
        super().__init__(f"overloaded: estimated {estimate_s:.1f}s to finish, over the {budget_s:.1f}s "
                         f"budget; retry after {retry_after_s}s")
        self.retry_after_s, self.estimate_s = retry_after_s, estimate_s


class TooLong(Exception):
    """Even alone on the device this request would not finish within request_timeout_s."""

    field = "num_inference_steps"  # the field the answer's details name (fewer samples would do too)

    def __init__(self, estimate_s: float, budget_s: float) -> None:
        super().__init__(f"estimated {estimate_s:.1f}s even alone on the device, over the {budget_s:.1f}s "
                         "budget (0.8 x request_timeout_s): ask for fewer samples or steps")
        self.estimate_s = estimate_s


class ShuttingDown(Exception):
    """Intake has stopped (shutdown), or the drain ran out of time before this request finished."""

    retry_after_s = 5  # another replica, or this one restarted


class BatchFailed(Exception):
    """A step holding some of this request's rows raised; other requests are unaffected."""


class UserGone(Exception):
    """The request's user was deleted (an enrolled person) while its rows were still queued."""


@dataclass(eq=False)
class RequestRows:
    """One generation request's rows as the worker holds them; results fill in as rows finish, then `future`
    resolves to the list (in seed order)."""

    spec: RowSpec
    seeds: list[int]
    future: asyncio.Future
    submitted_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    started_at: float | None = None  # when its first row took its first step
    joined_at: float | None = None  # when its last row took its first step
    done_at: float | None = None

    def __post_init__(self) -> None:
        self.results: list[Any] = [None] * len(self.seeds)
        self.remaining = len(self.seeds)

    @property
    def queue_s(self) -> float:
        return ((self.joined_at or time.monotonic()) - self.submitted_at)

    @property
    def inference_s(self) -> float:
        return ((self.done_at or time.monotonic()) - self.started_at) if self.started_at else 0.0


@dataclass(eq=False)
class Slot:
    req: RequestRows
    k: int  # index within the request
    row: Any = None  # the model's row once it joined (kept while it waits for a slot again)

    @property
    def left(self) -> int:
        """Steps still to run (the request's steps until it joined)."""
        return self.req.spec.steps - (self.row.i if self.row is not None else 0)


@dataclass(eq=False)
class DeviceJob:
    """Other device work (an enrolment, a deletion), run in chunks between denoising steps (submit_job)."""

    make_steps: Callable[[], Iterator[Any]]
    future: asyncio.Future
    it: Iterator[Any] | None = None


def fair_share(live: list[Slot], slots: int) -> list[Slot]:
    """The rows of the next step: round-robin over requests in arrival order (`live` is in arrival order), one
    row each per round, until the slots are full; within a request, the rows furthest along first."""
    by_req: dict[RequestRows, list[Slot]] = {}
    for s in live:
        by_req.setdefault(s.req, []).append(s)
    grant: dict[RequestRows, int] = {}
    free, reqs = slots, list(by_req)
    while free and reqs:
        more = []
        for req in reqs:
            if not free:
                break
            grant[req] = grant.get(req, 0) + 1
            free -= 1
            if grant[req] < len(by_req[req]):
                more.append(req)
        reqs = more
    chosen = []
    for req, n in grant.items():
        chosen += sorted(by_req[req], key=lambda s: (-(s.row.i if s.row is not None else -1), s.k))[:n]
    return chosen


def resolve(fut: asyncio.Future, value: Any) -> None:
    def set_it() -> None:
        if not fut.done():
            fut.set_result(value)
    fut.get_loop().call_soon_threadsafe(set_it)


def fail(fut: asyncio.Future, exc: Exception) -> None:
    def set_it() -> None:
        if not fut.done():
            fut.set_exception(exc)
    try:
        fut.get_loop().call_soon_threadsafe(set_it)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
