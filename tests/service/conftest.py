"""Service fixtures: the tiny pipeline loaded once, an instrumented fake sampler, and an in-process client helper."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import torch
from fastapi import FastAPI

from models.pipeline import DopplerPipeline
from service.app import create_app
from service.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Settings read DOPPLERGEN_* from the environment; a developer's shell must not change test outcomes."""
    for name in list(os.environ):
        if name.startswith("DOPPLERGEN_"):
            monkeypatch.delenv(name)



@pytest.fixture(scope="session")
def tiny_pipe(tiny_pipeline_dir) -> DopplerPipeline:
    return DopplerPipeline.load(tiny_pipeline_dir)


class FakeSampler:
    """Stands in for models.sampling.sample: records every batch, can block or sleep, returns seed-coded output.

    Sample values are `-(seed % 60)` dB everywhere, so a test can tell which seed produced which item.
    """

    def __init__(self, delay_s: float = 0.0, fail: Callable[[list[int]], Exception | None] | None = None) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.calls: list[dict] = []
        self.entered = threading.Event()  # set when a batch starts on the device thread
        self.gate = threading.Event()  # cleared = batches block until the test opens it
        self.gate.set()

    def __call__(self, pipe, user_indices, seeds, num_inference_steps=20, guidance_scale=2.0,
                 scheduler="dpmsolver++", pad_to=None) -> torch.Tensor:
        self.calls.append(dict(users=list(user_indices), seeds=list(seeds), steps=num_inference_steps,
                               guidance=guidance_scale, scheduler=scheduler, pad_to=pad_to))
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None and (exc := self.fail(list(seeds))) is not None:
            raise exc
        h, w = pipe.image_size
        return torch.stack([torch.full((pipe.channels, h, w), -float(s % 60)) for s in seeds])  # (N, C, H, W)

    @property
    def sizes(self) -> list[int]:
        return [len(c["seeds"]) for c in self.calls]

    @property
    def seeds_run(self) -> set[int]:
        return {s for c in self.calls for s in c["seeds"]}


@pytest.fixture
def fake() -> FakeSampler:
    return FakeSampler()


@pytest.fixture
def make_app(tiny_pipe) -> Callable[..., FastAPI]:
    """create_app around the preloaded tiny pipeline; keyword arguments are Settings fields."""

    def _make(sample_fn=None, pipeline: DopplerPipeline | None = tiny_pipe, **settings) -> FastAPI:
        settings.setdefault("pipeline", "/nonexistent")  # never read: the pipeline is injected
        settings.setdefault("max_wait_ms", 5)
        return create_app(Settings(**settings), pipeline=pipeline, sample_fn=sample_fn)

    return _make


@asynccontextmanager
async def serve(app: FastAPI, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (httpx.ASGITransport does not) and yield an in-process client."""
    async with app.router.lifespan_context(app):
        if wait_ready:
            await app.state.service.wait_ready(30)
            sampler = app.state.service.engine.sample_fn
            if isinstance(sampler, FakeSampler):
                sampler.calls.clear()  # forget the warm-up batch
                sampler.entered.clear()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client
