"""POST /generate: validate, admit the rows, wait (watching for disconnect and timeout), encode, answer."""

from __future__ import annotations

import asyncio
import secrets
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from models.sampling import is_enrolled, resolve
from service.conditions import CONDITION_FIELDS, request_conditions
from service.encoding import b64, encode_npy, encode_png
from service.engine import RowSpec
from service.errors import ApiError, invalid
from service.routes.deps import ApiKey, ReadyService
from service.rows import RequestRows
from service.schemas import (
    MAX_SEED,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    ModelRef,
    SampleItem,
    Timings,
)
from service.state import Service
from service.worker import StepWorker

router = APIRouter(tags=["generate"])

_ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "API key configured but missing or wrong",
        404: "unknown user_id",
        406: "Accept: image/png with num_samples > 1 or format npy",
        413: "body larger than max_body_bytes",
        422: "invalid field (the message names it), or too_long: could never finish within request_timeout_s",
        429: "overloaded (the work ahead would not let it finish in time) or queue full; see Retry-After",
        500: "a denoising step holding this request's rows failed",
        503: "not ready, or shutting down",
        504: "request_timeout_s passed before the samples were done",
    }.items()
}


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses={
        200: {"content": {"image/png": {}}, "description": "JSON, or one raw PNG with Accept: image/png"},
        **_ERRORS,
    },
    dependencies=[ApiKey],
    summary="Generate spectrograms for one user",
)
async def generate(body: GenerateRequest, request: Request, service: ReadyService) -> Response:
    t0 = time.monotonic()
    engine = service.engine
    if engine.pipe.condition_encoder is None and body.condition_guidance_scale is not None:
        raise invalid("condition_guidance_scale", "this pipeline was trained without conditions")
    if body.user_id not in engine.pipe.users:  # enrolled through another replica: adopt it
        await service.enroller.sync.adopt(body.user_id)
    # models.sampling.resolve: the pipeline's defaults; a request that names a condition is composed (identity
    # and conditions apart), one that lets all be drawn is plain; enrolled people get ENROLLED_GUIDANCE
    chosen = resolve(
        engine.pipe, steps=body.num_inference_steps, guidance=body.guidance_scale, sampler=body.scheduler,
        condition_guidance=body.condition_guidance_scale,
        named=any(getattr(body, f) is not None for f in CONDITION_FIELDS),
        enrolled=service.enroller.serves(body.user_id) or is_enrolled(engine.pipe, body.user_id),
    )
    steps, guidance, condition_guidance, scheduler = (
        chosen.steps, chosen.guidance, chosen.condition_guidance, chosen.sampler)
    _check_limits(body, steps, service)
    if scheduler not in engine.samplers:
        raise invalid("scheduler", f"{scheduler!r} does not apply to this {engine.pipe.route} pipeline; "
                                   f"choose one of {list(engine.samplers)}")
    raw_png = _wants_raw_png(request.headers.get("accept", ""))
    if raw_png and (body.num_samples != 1 or body.format != "png"):
        raise ApiError(
            406, "invalid",
            "Accept: image/png returns one raw PNG: ask for num_samples 1 and format png, or accept "
            "application/json",
        )
    try:
        user_index = engine.pipe.user_encoder.index_of(body.user_id)
    except KeyError:
        raise ApiError(404, "unknown_user",
                       "user_id: unknown user (GET /users lists the users of this model)") from None

    if body.seed is None:  # independent random seeds, echoed so any sample can be reproduced
        seeds = [secrets.randbelow(2**31) for _ in range(body.num_samples)]
    else:
        seeds = [body.seed + i for i in range(body.num_samples)]
    given = {f: getattr(body, f) for f in CONDITION_FIELDS}
    by_seed, used = request_conditions(engine.pipe, body.user_id, given, seeds)  # 422 naming a bad field
    spec = RowSpec(
        user_index=user_index, steps=steps, guidance=guidance, sampler=scheduler, conditions=by_seed,
        condition_guidance=condition_guidance,
    )
    rows = service.worker.submit(spec, seeds)  # QueueFull, Overloaded, TooLong, ShuttingDown: service.errors
    budget_s = service.settings.request_timeout_s - (time.monotonic() - t0)
    results = await _wait(request, service.worker, rows, budget_s)
    items, files = await run_in_threadpool(_encode_all, results, seeds, body, service, used)
    timings = Timings(queue_ms=rows.queue_s * 1e3, inference_ms=rows.inference_s * 1e3,
                      total_ms=(time.monotonic() - t0) * 1e3)
    pipe = engine.pipe
    model = ModelRef(name=pipe.name, version=pipe.version, route=pipe.route)
    if raw_png:
        return _raw_png_response(items[0], files[0], timings, model)
    response = GenerateResponse(items=items, seeds=seeds, num_inference_steps=steps, guidance_scale=guidance,
                                condition_guidance_scale=condition_guidance, scheduler=scheduler,
                                timings=timings, model=model)
    return JSONResponse(response.model_dump(mode="json"))


def _check_limits(body: GenerateRequest, steps: int, service: Service) -> None:
    s = service.settings
    if body.num_samples > s.max_samples_per_request:
        raise invalid("num_samples", f"must be <= max_samples_per_request ({s.max_samples_per_request})")
    if steps > service.engine.max_steps:
        raise invalid("num_inference_steps", f"must be <= {service.engine.max_steps}")
    if body.seed is not None and body.seed + body.num_samples - 1 > MAX_SEED:
        raise invalid("seed", f"seed + num_samples - 1 must be <= {MAX_SEED}")
    channels = service.engine.pipe.channels
    if body.format == "npy" and (body.colormap or body.bit_depth != 8):
        raise invalid("colormap" if body.colormap else "bit_depth", "applies to format png only")
    if body.colormap and channels != 1:
        raise invalid("colormap", f"needs a 1-channel model; this one has {channels} channels")
    if body.bit_depth == 16 and (body.colormap or channels != 1):
        raise invalid("bit_depth", "16-bit PNGs are grayscale only (no colormap, 1 channel)")


def _wants_raw_png(accept: str) -> bool:
    """True when the client prefers image/png over application/json (wildcards do not count)."""
    q = {}
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        weight = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        q[media.strip().lower()] = weight
    return q.get("image/png", 0.0) > q.get("application/json", 0.0)


async def _wait(
    request: Request, worker: StepWorker, rows: RequestRows, timeout_s: float
) -> list[np.ndarray]:
    """Wait for the rows; drop them at the next step if the client disconnects or the time budget runs out.

    A failed request's exception (BatchFailed, UserGone, ShuttingDown) goes on to service.errors' handlers."""
    gone = asyncio.ensure_future(_client_disconnected(request))
    try:
        await asyncio.wait({rows.future, gone}, timeout=max(timeout_s, 0.0),
                           return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server cancelled this request: its work must not run
        worker.cancel(rows, "server")
        raise
    finally:
        disconnected = gone.done() and not gone.cancelled()
        gone.cancel()
    if rows.future.done() and not rows.future.cancelled():
        return rows.future.result()
    worker.cancel(rows, "disconnected" if disconnected else "timeout")
    if disconnected:
        # Nobody reads this answer; 499 (nginx's "client closed request") keeps it apart in the metrics.
        raise ApiError(499, "disconnected", "client disconnected; its rows were dropped at the next step")
    raise ApiError(504, "timeout",
                   "not done within request_timeout_s; its rows were dropped at the next step")


async def _client_disconnected(request: Request) -> None:
    """Return when the ASGI server reports http.disconnect (the body has already been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _encode_all(
    results: list[np.ndarray], seeds: list[int], body: GenerateRequest, service: Service,
    conditions: list[dict] | None = None,
) -> tuple[list[SampleItem], list[bytes]]:
    """Encode every sample (runs in a worker thread, off the event loop); returns the items and the raw
    files."""
    pipe = service.engine.pipe
    dyn = float(pipe.normalization.dyn_range_db)
    items, files = [], []
    for k, (db, seed) in enumerate(zip(results, seeds, strict=True)):
        if body.format == "png":
            text = {"seed": seed, "model": f"{pipe.name} {pipe.version}", "db_min": -dyn, "db_max": 0.0,
                    "layout": "rows = Doppler bins, columns = time frames"}
            enc = encode_png(db, dyn, bit_depth=body.bit_depth, colormap=body.colormap, text=text)
        else:
            enc = encode_npy(db)
        items.append(SampleItem(seed=seed, format=body.format, media_type=enc.media_type,
                                shape=list(db.shape),
                                dtype=enc.dtype, db_range=(-dyn, 0.0), mapping=enc.mapping,
                                colormap=body.colormap,
                                data=b64(enc.data), conditions=conditions[k] if conditions else None))
        files.append(enc.data)
    return items, files


def _raw_png_response(item: SampleItem, png: bytes, timings: Timings, model: ModelRef) -> Response:
    headers = {
        "X-Dopplergen-Seed": str(item.seed),
        "X-Dopplergen-Dyn-Range-Db": f"{-item.db_range[0]:g}",
        "X-Dopplergen-Mapping": item.mapping,
        "X-Dopplergen-Model": f"{model.name} {model.version} ({model.route})",
        "X-Dopplergen-Queue-Ms": f"{timings.queue_ms:.1f}",
        "X-Dopplergen-Inference-Ms": f"{timings.inference_ms:.1f}",
        "X-Dopplergen-Total-Ms": f"{timings.total_ms:.1f}",
    }
    return Response(png, media_type="image/png", headers=headers)
