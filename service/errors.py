"""One JSON error shape for every failure: {"error": reason, "message": text, "details": [{field, message}]}.

A 500 never carries exception text (paths, tensor shapes, library internals): its message is generic and the
cause goes to the server log.

The domain exceptions of the worker and the enrolment manager (service.rows) are not caught in the routes:
DOMAIN_ERRORS gives each one status and reason, the same on every route."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.metrics import REJECTION_REASONS, Metrics
from service.rows import BatchFailed, Overloaded, QueueFull, ShuttingDown, TooLong, UserGone

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
        (self.status, self.reason, self.message,
         self.headers, self.details) = status, reason, message, headers, details


def error_response(
    status: int, reason: str, message: str, headers: dict[str, str] | None = None, details: list | None = None
) -> JSONResponse:
    body: dict = {"error": reason, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


# exception -> (status, reason). The message is the exception's text; its `retry_after_s`, if any, is sent as
# Retry-After, and its `field`, if any, is named in the details.
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    QueueFull: (429, "queue_full"),  # max_queue rows wait for a slot, or max_enrolments device jobs
    Overloaded: (429, "overloaded"),  # the work ahead would not let it finish in time now
    TooLong: (422, "too_long"),  # it could not finish in time even alone
    UserGone: (404, "unknown_user"),  # the user was deleted while the request's rows were queued
    BatchFailed: (500, "batch_failed"),  # a step or decode holding its rows raised
    ShuttingDown: (503, "not_ready"),  # intake stopped, or the drain ended before it finished
}


def domain_error(exc: Exception) -> ApiError:
    """The ApiError a domain exception (a key of DOMAIN_ERRORS, or a subclass of one) answers with."""
    status, reason = next(DOMAIN_ERRORS[c] for c in type(exc).__mro__ if c in DOMAIN_ERRORS)
    retry, field = getattr(exc, "retry_after_s", None), getattr(exc, "field", None)
    return ApiError(status, reason, str(exc),
                    headers={"Retry-After": str(retry)} if retry is not None else None,
                    details=[{"field": field, "message": str(exc)}] if field else None)


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

    async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
        return await _api_error(request, domain_error(exc))

    for exc_class in DOMAIN_ERRORS:
        app.add_exception_handler(exc_class, _domain_error)

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
