"""Shared route dependencies: the Service, the API key check and the readiness gate."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request

from service.errors import ApiError
from service.state import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_api_key(request: Request, service: ServiceDep) -> None:
    """When an API key is configured: accept `X-API-Key: <key>` or `Authorization: Bearer <key>`, else 401."""
    expected = service.settings.api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    if not given or not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong API key: send X-API-Key: <key> or Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_ready(service: ServiceDep) -> Service:
    """503 while the pipeline loads or warms up, after loading failed, and once shutdown has begun."""
    status = service.status
    if status != "ready":
        message = {
            "loading": "not ready: the model is loading or warming up",
            "shutting_down": "shutting down: not accepting new work",
            "failed": "not ready: the model failed to load",
        }[status]
        raise ApiError(503, "not_ready", message, headers={"Retry-After": "5"})
    return service


ApiKey = Depends(require_api_key)
ReadyService = Annotated[Service, Depends(require_ready)]
