"""Operational routes: liveness, readiness and Prometheus metrics (no API key, so probes and scrapers
work)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.routes.deps import ServiceDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process serves HTTP (503 only when the model failed to load)")
async def healthz(service: ServiceDep) -> JSONResponse:
    if service.failure:
        # The reason (paths, exception text) goes to the log, not to unauthenticated probes.
        return JSONResponse({"status": "failed", "message": "the model failed to load; see the server log"},
                            status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz", summary="Readiness: 200 once the model is loaded and warmed up, 503 before and at shutdown; "
                       "lists the users-folder entries skipped as damaged"
)
async def readyz(service: ServiceDep) -> JSONResponse:
    status = service.status
    body: dict = {"status": status}
    if service.enroller.skipped:  # file names and our own reasons only: no paths, no exception text
        body["skipped_users"] = [s.as_dict() for s in service.enroller.skipped]
    return JSONResponse(body, status_code=200 if status == "ready" else 503)


@router.get("/metrics", summary="Prometheus text exposition", response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(service.engine.device), media_type=CONTENT_TYPE_LATEST)
