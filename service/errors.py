"""One JSON error shape for every failure: {"error": reason, "message": text, "details": [{field, message}]}.

A 500 never carries exception text (paths, tensor shapes, library internals): its message is generic and the
cause goes to the server log."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.metrics import REJECTION_REASONS, Metrics

log = logging.getLogger("dopplergen.errors")
INTERNAL_MESSAGE = "internal server error; the server log has the details"


class ApiError(Exception):
    """An expected failure with its status code; `reason` is the machine-readable code and metric label."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers, self.details = status, reason, message, headers, details


def error_response(
    status: int, reason: str, message: str, headers: dict[str, str] | None = None, details: list | None = None
) -> JSONResponse:
    body: dict = {"error": reason, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", details=[{"field": field, "message": message}])


def _field_name(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]  # ("body", "num_samples") -> "num_samples"
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        if exc.reason in REJECTION_REASONS:
            metrics.reject(exc.reason)
        if exc.status >= 500 and exc.status not in (503, 504):  # 503/504 messages are fixed texts, not causes
            log.error("%s on %s: %s", exc.reason, request.url.path, exc.message)
            return error_response(exc.status, exc.reason, INTERNAL_MESSAGE, exc.headers)
        return error_response(exc.status, exc.reason, exc.message, exc.headers, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for err in exc.errors():
            field = _field_name(tuple(err.get("loc", ())))
            if err.get("type") == "json_invalid":
                field = "body"
            msg = err.get("msg", "invalid value")
            if err.get("type") == "json_invalid":
                msg = f"not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
            details.append({"field": field, "message": msg})
        metrics.reject("invalid")
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
        return error_response(422, "invalid", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, reason, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal", INTERNAL_MESSAGE)
