"""GET /users/{user_id}/examples: real recordings of a person: from the dataset the server was started with,
or, for a person enrolled through POST /users, the recordings they were enrolled from, as the pipeline's
texture bank keeps them (reconstruction + residual, fp16)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from service.axes import pipeline_axes
from service.encoding import b64, encode_npy
from service.errors import ApiError
from service.examples import ExampleStore, RecordingError
from service.routes.deps import ApiKey, ServiceDep
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
    service: ServiceDep,
    n: Annotated[int, Query(ge=1, le=MAX_EXAMPLES, description="how many recordings, in manifest order")] = 4,
    split: Annotated[
        str | None, Query(max_length=32, description="only this split (train, val, test)")
    ] = None,
) -> ExamplesResponse:
    own = enrolled_examples(service, user_id, n) if split in (None, "enrolled") else None
    if own is not None:
        return own
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


def enrolled_examples(service, user_id: str, n: int) -> ExamplesResponse | None:
    """The recordings an enrolled person was enrolled from, as the texture bank holds them; None when the
    person is not enrolled here or the pipeline keeps no bank."""
    pipe = service.engine.pipe
    bank = getattr(pipe, "texture", None)
    if pipe is None or bank is None or not service.enroller.serves(user_id):
        return None
    if user_id not in bank.config.users:
        return None
    mine = (bank.owners == bank.config.users.index(user_id)).nonzero().flatten()
    dyn = float(pipe.normalization.dyn_range_db)
    items = []
    for k, i in enumerate(mine[:n].tolist()):
        db = (bank.means[i].float() + bank.residuals[i].float()).clamp(-dyn, 0.0).numpy()
        enc = encode_npy(db)
        items.append(Example(path=f"{user_id}/enrolled_{k:02d}.npy", split="enrolled", conditions={},
                             media_type=enc.media_type, shape=list(db.shape), dtype=enc.dtype,
                             mapping=enc.mapping, data=b64(enc.data)))
    return ExamplesResponse(user_id=user_id, items=items, total=len(mine),
                            axes=pipeline_axes(pipe.meta, tuple(pipe.image_size)))

