"""Each domain exception of the worker and the enrolment manager answers with one status and reason, on every
route: service.errors.DOMAIN_ERRORS, with Retry-After and details taken from the exception."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from service.errors import DOMAIN_ERRORS, install_error_handlers
from service.metrics import REJECTION_REASONS, Metrics
from service.rows import BatchFailed, Overloaded, QueueFull, ShuttingDown, TooLong, UserGone

pytestmark = pytest.mark.anyio

RAISED = {
    "queue_full": QueueFull(7, 5, 4),
    "overloaded": Overloaded(3, 12.5, 9.0),
    "too_long": TooLong(20.0, 9.0),
    "unknown_user": UserGone("user 'x' was deleted while the request was queued"),
    "batch_failed": BatchFailed("generation failed: RuntimeError: /secret/path"),
    "not_ready": ShuttingDown("shutting down: not accepting new work"),
}


async def test_every_domain_exception_has_one_answer_on_every_route():
    metrics = Metrics()
    app = FastAPI()
    install_error_handlers(app, metrics)
    for reason, exc in RAISED.items():
        for path in (f"/a/{reason}", f"/b/{reason}"):  # two routes, one answer
            app.add_api_route(path, _raiser(exc), methods=["POST"])

    assert {type(e) for e in RAISED.values()} == set(DOMAIN_ERRORS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for reason, exc in RAISED.items():
            a, b = await client.post(f"/a/{reason}"), await client.post(f"/b/{reason}")
            status, expected_reason = DOMAIN_ERRORS[type(exc)]
            assert a.status_code == b.status_code == status and a.json() == b.json()
            assert a.json()["error"] == expected_reason == reason
            assert a.headers.get("retry-after") == b.headers.get("retry-after")
    answers = {reason: (await _answer(app, reason)) for reason in RAISED}
    full = {"error": "queue_full", "message": "queue full: 5 of 4 samples waiting; retry after 7s"}
    assert answers["queue_full"] == (429, full, "7")
    assert answers["overloaded"][0] == 429 and answers["overloaded"][2] == "3"
    assert answers["overloaded"][1]["message"].endswith("; retry after 3s")
    too_long = answers["too_long"]
    assert too_long[0] == 422 and too_long[1]["details"][0]["field"] == "num_inference_steps"
    gone = {"error": "unknown_user", "message": str(RAISED["unknown_user"])}
    assert answers["unknown_user"] == (404, gone, None)
    assert answers["batch_failed"][0] == 500 and "secret" not in str(answers["batch_failed"][1])
    stopping = {"error": "not_ready", "message": "shutting down: not accepting new work"}
    assert answers["not_ready"] == (503, stopping, "5")
    for reason in RAISED:
        if reason in REJECTION_REASONS:  # two routes, and once more above
            assert metrics.rejections.labels(reason=reason)._value.get() == 3, reason


def _raiser(exc: Exception):
    async def route() -> None:
        raise exc

    return route


async def _answer(app: FastAPI, reason: str) -> tuple[int, dict, str | None]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post(f"/a/{reason}")
    return r.status_code, r.json(), r.headers.get("retry-after")
