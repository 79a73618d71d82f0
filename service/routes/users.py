"""Enrolment: POST /users (a new person from 3 to 50 recordings), GET /users/{user_id}, DELETE
/users/{user_id}."""

from __future__ import annotations

import hashlib
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from models.colormap import check_name
from models.paths import USER_ID_RULE, is_new_user_id
from models.recording import AUTO, DatasetError, read_file
from service.errors import ApiError, invalid
from service.routes.deps import ApiKey, ReadyService, ServiceDep
from service.schemas import EnrolAccepted, ErrorResponse, UserStatus
from service.state import Service

router = APIRouter(tags=["users"], dependencies=[ApiKey])
MIN_FILES, MAX_FILES = 3, 50

def _errors(*codes: int) -> dict:
    return {c: {"model": ErrorResponse} for c in codes}


@router.post("/users", status_code=202, response_model=EnrolAccepted, responses=_errors(401, 409, 413, 422,
                                                                                        429, 503),
             summary="Enrol a new person from 3 to 50 recordings (.npy in dB, or PNG/JPEG: grey = dB, or "
                     "colour-mapped); poll GET /users/{user_id}")
async def enrol(user_id: Annotated[str, Form()], files: Annotated[list[UploadFile], File()],
                service: ReadyService,
                colormap: Annotated[str | None, Form(
                    description="matplotlib colour map of colour images (jet, turbo, viridis, ...); empty or "
                                "'auto': the best-fitting map is detected")] = None) -> EnrolAccepted:
    if not is_new_user_id(user_id):
        raise invalid("user_id", USER_ID_RULE)
    if colormap is not None and colormap.lower() not in AUTO:
        try:
            check_name(colormap)
        except ValueError as exc:
            raise invalid("colormap", str(exc)) from None
    entry = service.enroller.reserve(user_id)  # before any await: a second POST for it gets 409
    if entry is None:
        raise ApiError(409, "user_exists", f"user_id: {user_id!r} already exists; DELETE /users/{user_id} "
                                           "first")
    try:
        if not MIN_FILES <= len(files) <= MAX_FILES:
            raise invalid("files", f"send {MIN_FILES} to {MAX_FILES} recordings, got {len(files)}")
        x_db, hashes = await _read(files, service, colormap)
        # QueueFull, ShuttingDown: service.errors
        queued = service.enroller.submit(user_id, entry, x_db, hashes)
    finally:
        service.enroller.release(user_id, entry)  # nothing once queued
    if not queued:
        raise ApiError(409, "user_deleted", f"user_id: DELETE /users/{user_id} cancelled this enrolment "
                                            "while its files were read; nothing was enrolled")
    return EnrolAccepted(user_id=user_id, status="enrolling")


async def _read(files: list[UploadFile], service: Service,
                colormap: str | None) -> tuple[np.ndarray, list[dict]]:
    """Every upload by the dataset reader's per-file rules (models/recording.py), at the model's size; 422
    naming the first bad file and the rule."""
    pipe, limit = service.engine.pipe, service.settings.max_file_bytes
    dyn, arrays, hashes = float(pipe.normalization.dyn_range_db), [], []
    for i, f in enumerate(files):
        name = (f.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:128] or f"file {i}"
        raw = await f.read(limit + 1)
        if len(raw) > limit:
            raise invalid("files", f"{name}: larger than max_file_bytes ({limit} bytes)")
        try:
            reading = await run_in_threadpool(read_file, raw, name, pipe.channels, dyn, pipe.image_size,
                                              colormap)
        except DatasetError as exc:
            raise invalid("files", str(exc)) from None
        arrays.append(reading.db)
        hashes.append({"file": name, "sha256": hashlib.sha256(raw).hexdigest()})
        if reading.colormap is not None:  # provenance: which map its colours were read through
            hashes[-1].update(colormap=reading.colormap, colormap_detected=reading.detected)
    return np.stack(arrays), hashes


@router.get("/users/{user_id}", response_model=UserStatus, responses=_errors(401, 404),
            summary="A user's enrolment status (trained users are always ready)")
async def user_status(user_id: str, service: ServiceDep) -> UserStatus:
    status = await service.enroller.lookup(user_id) if service.ready else service.enroller.status(user_id)
    if status is None:
        raise ApiError(404, "unknown_user", f"user_id: no user {user_id!r} (GET /users lists them)")
    return UserStatus(user_id=user_id, **status)


@router.delete("/users/{user_id}", response_model=UserStatus, responses=_errors(401, 404, 409, 429, 503),
               summary="Remove an enrolled user (or cancel its enrolment); trained users cannot be removed")
async def delete_user(user_id: str, service: ReadyService) -> UserStatus:
    status = await service.enroller.lookup(user_id)  # one served by another replica is adopted, then deleted
    if status is None:
        raise ApiError(404, "unknown_user", f"user_id: no user {user_id!r} (GET /users lists them)")
    if not status["enrolled"]:
        raise ApiError(409, "trained_user", f"user_id: {user_id!r} was trained with the model; only enrolled "
                                            "users can be deleted")
    await service.enroller.delete(user_id)  # QueueFull, ShuttingDown: service.errors
    return UserStatus(user_id=user_id, status="deleted", progress=status["progress"], error=None,
                      enrolled=True)
