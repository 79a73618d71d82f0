"""Shared route dependencies: the Service, the API key check and the readiness gate."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from service.errors import ApiError
from service.state import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


UNAUTHORIZED = "missing or wrong API key: send X-API-Key: <key> or Authorization: Bearer <key>"


def api_key_matches(headers: Mapping[str, str], expected: SecretStr) -> bool:
    """`X-API-Key: <key>` or `Authorization: Bearer <key>`, compared in constant time."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return bool(given) and secrets.compare_digest(given.encode(), expected.get_secret_value().encode())


def require_api_key(request: Request, service: ServiceDep) -> None:
    """When an API key is configured, 401 without it. Declaring this dependency is also what puts the route's
    path in service.routes.PROTECTED_PATHS, where ApiKeyMiddleware checks the key before the body is read."""
    expected = service.settings.api_key
    if expected is not None and not api_key_matches(request.headers, expected):
        raise ApiError(401, "unauthorized", UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def needs_api_key(route: object) -> bool:
    """True when a declared route (or a dependency of its dependencies) depends on require_api_key; a router's
    `dependencies=[ApiKey]` is part of each of its routes."""
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        if dependant.call is require_api_key:
            return True
        stack.extend(dependant.dependencies)
    return False


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
