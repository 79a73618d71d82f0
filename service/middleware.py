"""Pure ASGI middleware: request count/latency by route template, the API key check (401) before any body is
read, the request body size limit (413), and response header values made safe to send."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.metrics import OTHER_ROUTE, Metrics
from service.routes.deps import UNAUTHORIZED, api_key_matches

# Control characters (CR and LF above all) would end a header line early: a 500, or a forged header.
_UNSAFE_HEADER_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class RequestMetricsMiddleware:
    """Counts every HTTP response by (route, status) and times it; unknown paths are labelled "other"."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None) or scope["path"]  # the template once routed
            route = route if route in self.routes else OTHER_ROUTE
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.request_latency.labels(route=route).observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413, by Content-Length or while reading a chunked body.

    The (small) body is read here and replayed to the app; later receive() calls go straight through,
    so the routes still see the client's disconnect.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_bytes: int,
                 per_path: dict[str, int] | None = None) -> None:
        self.app, self.metrics, self.max_bytes = app, metrics, max_bytes
        self.per_path = per_path or {}  # e.g. POST /users: uploads get their own, larger limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._too_large(send, limit)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away mid-body
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await self._too_large(send, limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, limit: int) -> None:
        self.metrics.reject("invalid")
        name = "max_body_bytes" if limit == self.max_bytes else "max_upload_bytes"
        payload = json.dumps(
            {"error": "body_too_large", "message": f"request body exceeds {name} ({limit} bytes)"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


class ApiKeyMiddleware:
    """401 for a protected path (service.routes.PROTECTED_PATHS: the route templates that declare the ApiKey
    dependency), before the body is read or parsed.

    FastAPI parses the JSON body before it runs dependencies, so the dependency alone would answer 422 to an
    unauthenticated client with a broken body; here the key is checked first, on the headers only. A path is
    protected for every method when any route on it declares the key.
    """

    def __init__(
        self, app: ASGIApp, metrics: Metrics, api_key: SecretStr | None, paths: Iterable[str]
    ) -> None:
        self.app, self.metrics, self.api_key = app, metrics, api_key
        self._paths = [compile_path(p)[0] for p in paths]  # "/users/{user_id}" -> its regex

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.api_key is None
            or api_key_matches(Headers(scope=scope), self.api_key)
        ):
            await self.app(scope, receive, send)
            return
        if not any(p.match(scope["path"]) for p in self._paths):
            await self.app(scope, receive, send)
            return
        self.metrics.reject("unauthorized")
        response = error_response(401, "unauthorized", UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class SafeHeadersMiddleware:
    """Replaces control characters in response header values with spaces (values built from pipeline
    metadata)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_safe(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, _UNSAFE_HEADER_BYTES.sub(b" ", v)) for k, v in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, send_safe)
