"""What the model offers: GET /users and GET /info."""

from __future__ import annotations

from fastapi import APIRouter

from models.condition_stats import offered_conditions
from models.sampling import resolve
from service.axes import pipeline_axes
from service.encoding import NPY_MEDIA_TYPE, PNG_MEDIA_TYPE
from service.errors import ApiError
from service.routes.deps import ApiKey, ServiceDep
from service.schemas import COLORMAPS, UsersResponse
from service.state import Service

router = APIRouter(tags=["catalog"], dependencies=[ApiKey])


def _loaded(service: Service):
    if service.engine.pipe is None:
        raise ApiError(503, "not_ready", "not ready: the model is loading", headers={"Retry-After": "5"})
    return service.engine.pipe


@router.get(
    "/users", response_model=UsersResponse, summary="User IDs the model can generate for, in index order"
)
async def users(service: ServiceDep) -> UsersResponse:
    users = _loaded(service).users
    enrolled = set(service.enroller.enrolled()) | set(_loaded(service).meta.get("enrolled_users") or {})
    return UsersResponse(users=users, count=len(users), enrolled=[u for u in users if u in enrolled])


@router.get("/info", summary="Model, spectrogram geometry, dB scale, device, batching settings and limits")
async def info(service: ServiceDep) -> dict:
    pipe, engine, s = _loaded(service), service.engine, service.settings
    dyn = float(pipe.normalization.dyn_range_db)
    h, w = pipe.image_size
    # a request that names no condition / one that does
    plain, named = resolve(pipe), resolve(pipe, named=True)
    return {
        "model": {"name": pipe.name, "version": pipe.version, "route": pipe.route,
                  "autoencoder": type(pipe.vae).__name__, "denoiser": type(pipe.denoiser).__name__},
        "status": service.status,
        "image_size": [h, w],
        "channels": pipe.channels,
        "shape": [pipe.channels, h, w],
        "dyn_range_db": dyn,
        "db_range": [-dyn, 0.0],
        **pipeline_axes(pipe.meta, (h, w)),  # doppler_hz_row0, doppler_hz_per_bin, seconds_per_frame, ...
        # speed_mps, aspect_deg, activity, ...: type, range or values, encoding; {} for an identity-only
        # pipeline
        "conditions": offered_conditions(pipe.condition_encoder, pipe.meta.get("conditions")),
        "num_users": len(pipe.users),
        "device": engine.device,
        "dtype": engine.dtype,
        "batching": {
            "max_batch_size": s.max_batch_size,
            "max_wait_ms": s.resolved_max_wait_ms(engine.device),
            "max_queue": s.max_queue,
            "batch_padding": engine.padding,
            "request_timeout_s": s.request_timeout_s,
        },
        "schedulers": list(engine.samplers),
        "defaults": {
            "num_inference_steps": plain.steps,
            "guidance_scale": plain.guidance,
            # people added by enrolment
            "enrolled_guidance_scale": resolve(engine.pipe, enrolled=True).guidance,
            # requests that name a condition: compositional guidance (docs/conditions.md)
            "identity_guidance_scale": named.guidance if named.condition_guidance is not None else None,
            "condition_guidance_scale": named.condition_guidance,
            "scheduler": plain.sampler,
            "format": "png",
        },
        "limits": {
            "max_samples_per_request": s.max_samples_per_request,
            "max_steps": engine.max_steps,
            "max_body_bytes": s.max_body_bytes,
            "guidance_scale": [0.0, 50.0],
            "condition_guidance_scale": [0.0, 50.0],
        },
        "formats": {"png": PNG_MEDIA_TYPE, "npy": NPY_MEDIA_TYPE},
        "colormaps": list(COLORMAPS),
        "auth_required": s.api_key is not None,
    }
