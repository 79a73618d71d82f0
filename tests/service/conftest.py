"""Service fixtures: the tiny pipeline loaded once, an instrumented fake model (stepper), and an in-process
client."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pytest
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


class FakeRow:
    def __init__(self, spec, seed: int) -> None:
        self.spec, self.seed, self.i = spec, seed, 0

    @property
    def done(self) -> bool:
        return self.i >= self.spec.steps


class FakeStepper:
    """Stands in for the model row by row: records every step, can block, sleep or fail, decodes seed-coded
    output.

    Sample values are `-(seed % 60)` dB everywhere, so a test can tell which seed produced which item.
    """

    def __init__(
        self, delay_s: float = 0.0, fail: Callable[[list[int]], Exception | None] | None = None
    ) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.calls: list[dict] = []  # one per denoising step
        self.entered = threading.Event()  # set when a step starts on the device thread
        self.gate = threading.Event()  # cleared = steps block until the test opens it
        self.gate.set()

    def start(self, pipe, spec, seed: int) -> FakeRow:
        return FakeRow(spec, seed)

    def step(self, pipe, rows: list[FakeRow], pad_to: int | None, cfg: bool | None) -> None:
        self.calls.append(dict(
            users=[r.spec.user_index for r in rows], seeds=[r.seed for r in rows], at=[r.i for r in rows],
            steps=[r.spec.steps for r in rows], guidance=[r.spec.guidance for r in rows],
            scheduler=[r.spec.sampler for r in rows], pad_to=pad_to,
        ))
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail is not None and (exc := self.fail([r.seed for r in rows])) is not None:
            raise exc
        for r in rows:
            r.i += 1

    def finish(self, pipe, rows: list[FakeRow], one_by_one: bool) -> list[np.ndarray]:
        if not all(r.done for r in rows):
            raise ValueError("a row has steps left")  # as models.sampling.finish_rows
        h, w = pipe.image_size
        return [np.full((pipe.channels, h, w), -float(r.seed % 60), dtype=np.float32) for r in rows]

    @property
    def sizes(self) -> list[int]:
        return [len(c["seeds"]) for c in self.calls]

    @property
    def seeds_run(self) -> set[int]:
        return {s for c in self.calls for s in c["seeds"]}


@pytest.fixture
def fake() -> FakeStepper:
    return FakeStepper()


@pytest.fixture
def make_app(tiny_pipe) -> Callable[..., FastAPI]:
    """create_app around the preloaded tiny pipeline; keyword arguments are Settings fields."""

    def _make(stepper=None, pipeline: DopplerPipeline | None = tiny_pipe, **settings) -> FastAPI:
        settings.setdefault("pipeline", "/nonexistent")  # never read: the pipeline is injected
        settings.setdefault("users_dir", "none")  # memory only unless a test names a folder
        return create_app(Settings(**settings), pipeline=pipeline, stepper=stepper)

    return _make


@asynccontextmanager
async def serve(app: FastAPI, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (httpx.ASGITransport does not) and yield an in-process client."""
    async with app.router.lifespan_context(app):
        if wait_ready:
            await app.state.service.wait_ready(30)
            stepper = app.state.service.engine.stepper
            if isinstance(stepper, FakeStepper):
                stepper.calls.clear()  # forget the warm-up steps
                stepper.entered.clear()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            yield client


@pytest.fixture
def folder(tmp_path):
    """One users folder for the test: every app of it (a restart, a second replica) shares it."""
    return tmp_path / "users"


@pytest.fixture
def app_for(make_app, tiny_pipeline_dir, folder):
    """A fresh tiny pipeline per app (enrolment changes the served encoder), on the test's users folder."""

    def _make(**settings):
        settings.setdefault("users_dir", str(folder))
        settings.setdefault("enrol_steps", 6)
        settings.setdefault("max_batch_size", 2)
        return make_app(pipeline=DopplerPipeline.load(tiny_pipeline_dir), **settings)

    return _make
