"""The app factory: settings + engine + step worker + metrics behind FastAPI, with a lifespan that loads and
warms up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from models.pipeline import DopplerPipeline
from service.engine import Stepper
from service.errors import install_error_handlers
from service.examples import ExampleStore
from service.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    RequestMetricsMiddleware,
    SafeHeadersMiddleware,
)
from service.routes import PATHS, PROTECTED_PATHS, router, web
from service.settings import Settings
from service.state import Service


def create_app(
    settings: Settings | None = None, pipeline: DopplerPipeline | None = None, stepper: Stepper | None = None
) -> FastAPI:
    """Build the app. `pipeline` skips loading from disk; `stepper` replaces the model row by row (tests)."""
    settings = settings or Settings()
    service = Service(settings, pipeline, stepper, routes=PATHS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="dopplergen",
        summary="User-specific synthetic micro-Doppler spectrograms from a latent diffusion model.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = service
    # real recordings for the page
    app.state.examples = ExampleStore(settings.data) if settings.data else None
    install_error_handlers(app, service.metrics)
    app.include_router(router)
    web.install(app)  # GET / and /static
    app.add_middleware(BodyLimitMiddleware, metrics=service.metrics, max_bytes=settings.max_body_bytes,
                       per_path={"/users": settings.max_upload_bytes})
    app.add_middleware(ApiKeyMiddleware, metrics=service.metrics, api_key=settings.api_key,
                       paths=PROTECTED_PATHS)  # before any body is read
    app.add_middleware(SafeHeadersMiddleware)
    # outermost: sees 413s too
    app.add_middleware(RequestMetricsMiddleware, metrics=service.metrics, routes=PATHS)
    return app
