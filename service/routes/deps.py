"""Shared route dependencies: the Service, the API key check and the readiness gate."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr
from starlette.routing import compile_path

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
    """When an API key is configured, 401 without it. Declaring this dependency is also what makes
    service.middleware.ApiKeyMiddleware check the key before the body is read."""
    expected = service.settings.api_key
    if expected is not None and not api_key_matches(request.headers, expected):
        raise ApiError(401, "unauthorized", UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def needs_api_key(route: object) -> bool:
    """True when a route (or a dependency of its dependencies) declares require_api_key."""
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        if dependant.call is require_api_key:
            return True
        stack.extend(dependant.dependencies)
    return False


def protected_paths(routes: Iterable[object], prefix: str = "", inherited: bool = False) -> list[re.Pattern]:
    """Path regexes of every route that needs the key, through included routers (FastAPI >= 0.16x keeps
    them as lazy `_IncludedRouter`s holding `original_router` and an `include_context`)."""
    out = []
    for route in routes:
        if getattr(route, "path", None) is not None and (inherited or needs_api_key(route)):
            out.append(compile_path(prefix + route.path)[0])
        sub = getattr(route, "original_router", None)
        if sub is not None:
            ctx = getattr(route, "include_context", None)
            deps = getattr(ctx, "dependencies", None) or []
            keyed = inherited or any(getattr(d, "dependency", None) is require_api_key for d in deps)
            out += protected_paths(sub.routes, prefix + (getattr(ctx, "prefix", "") or ""), keyed)
    return out


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
