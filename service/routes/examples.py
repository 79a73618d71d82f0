"""GET /users/{user_id}/examples: real recordings of a person from the dataset the server was started with."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from service.encoding import b64, encode_npy
from service.errors import ApiError
from service.examples import ExampleStore, RecordingError
from service.routes.deps import ApiKey
from service.schemas import ErrorResponse, Example, ExamplesResponse

log = logging.getLogger("dopplergen.examples")
router = APIRouter(tags=["catalog"], dependencies=[ApiKey])
MAX_EXAMPLES = 16

def get_store(request: Request) -> ExampleStore:
    store = getattr(request.app.state, "examples", None)
    if store is None:
        raise ApiError(
            404, "no_dataset",
            "the server was started without a dataset: start it with --data <folder> (DOPPLERGEN_DATA)",
        )
    return store


@router.get(
    "/users/{user_id}/examples",
    response_model=ExamplesResponse,
    responses={
        404: {"model": ErrorResponse, "description": "no dataset configured, or no recordings of this user"}
    },
    summary="Real recordings of one user from the server's dataset (--data), as base64 .npy like /generate",
)
async def examples(
    user_id: str,
    request: Request,
    n: Annotated[int, Query(ge=1, le=MAX_EXAMPLES, description="how many recordings, in manifest order")] = 4,
    split: Annotated[
        str | None, Query(max_length=32, description="only this split (train, val, test)")
    ] = None,
) -> ExamplesResponse:
    store = get_store(request)
    recs = store.recordings(user_id, split)
    if not recs:
        where = f" in split {split!r}" if split else ""
        raise ApiError(404, "unknown_user", f"no recordings of user {user_id!r}{where} in the dataset")

    def load_all() -> list[Example]:
        items = []
        for rec in recs[:n]:
            try:
                db = store.load(rec)  # (C, doppler, time) float32 dB
            except RecordingError as exc:  # the server's data, not the request, is at fault: skip it
                log.warning("examples: %s", exc)
                continue
            enc = encode_npy(db)
            items.append(Example(path=rec.path, split=rec.split, conditions=rec.conditions,
                                 media_type=enc.media_type, shape=list(db.shape), dtype=enc.dtype,
                                 mapping=enc.mapping, data=b64(enc.data)))
        return items

    items = await run_in_threadpool(load_all)
    axes = store.axes(tuple(items[0].shape[1:]) if items else None)
    return ExamplesResponse(user_id=user_id, items=items, total=len(recs), axes=axes)
