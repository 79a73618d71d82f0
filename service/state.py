"""Runtime state shared by the routes: settings, metrics, engine, step worker, readiness; and its
start/stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from models.pipeline import DopplerPipeline
from service.engine import Engine, Stepper
from service.enrolment import Enroller
from service.metrics import Metrics
from service.settings import Settings
from service.worker import StepWorker

log = logging.getLogger("dopplergen.service")


class Service:
    """Runtime state the routes share: settings, metrics, the engine, the step worker and readiness."""

    def __init__(
        self,
        settings: Settings,
        pipeline: DopplerPipeline | None = None,
        stepper: Stepper | None = None,
        routes: tuple[str, ...] = (),  # route templates, to export their metric series from the start
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(routes=routes)
        self.engine = Engine(settings, pipeline, stepper)
        self.worker = StepWorker(
            self.engine, self.metrics, max_queue=settings.max_queue,
            request_timeout_s=settings.request_timeout_s,
            max_wait_s=settings.resolved_max_wait_ms(self.engine.device) / 1000.0,
            max_jobs=settings.max_enrolments,
        )
        users_dir = settings.resolved_users_dir()
        log.info("enrolled users are %s", f"kept in {users_dir}" if users_dir else "kept in memory only")
        self.enroller = Enroller(self.engine, self.worker, users_dir, settings.enrol_steps,
                                 settings.users_scan_s)
        self.ready = False
        self.failure: str | None = None  # why loading failed, if it did
        self.on_fatal: Callable[[str], None] | None = None  # set by `dopplergen serve`: stop the server
        self._settled = asyncio.Event()  # set once loading succeeded or failed
        self._startup: asyncio.Task | None = None
        self._stopped = False

    @property
    def status(self) -> str:
        if self.failure:
            return "failed"
        if not self.worker.accepting:
            return "shutting_down"
        return "ready" if self.ready else "loading"

    def begin_shutdown(self) -> None:
        """Stop intake (new work gets 503, /readyz turns 503); safe to call from a signal handler."""
        self.worker.begin_shutdown()

    async def start(self) -> None:
        self._startup = asyncio.get_running_loop().create_task(
            self._load_and_warm_up(), name="dopplergen-startup"
        )

    async def wait_ready(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._settled.wait(), timeout_s)
        if self.failure:
            raise RuntimeError(f"the pipeline failed to load: {self.failure}")

    async def stop(self) -> None:
        """Stop intake, finish queued and running work (up to request_timeout_s), release the device
        thread."""
        if self._stopped:
            return
        self._stopped = True
        self.begin_shutdown()
        await self.enroller.sync.stop()
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
        await self.worker.close(drain_timeout_s=self.settings.request_timeout_s)
        self.ready = False
        self.metrics.model_loaded.set(0)
        self.engine.close()
        log.info("stopped")

    async def _load_and_warm_up(self) -> None:
        loop, engine = asyncio.get_running_loop(), self.engine
        t0 = time.perf_counter()
        try:
            pipe = await loop.run_in_executor(engine.executor, engine.load)
            await loop.run_in_executor(engine.executor, self.enroller.restore)  # the users folder's people
            self.metrics.set_model(
                name=pipe.name, version=pipe.version, route=pipe.route, device=engine.device,
                dtype=engine.dtype
            )
            if self.settings.warmup:
                await loop.run_in_executor(engine.executor, engine.warmup)
            self.worker.start()  # the step loop takes over the device thread
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("could not load and warm up the pipeline: %s", self.failure, exc_info=True)
            self._settled.set()
            if self.on_fatal is not None:
                self.on_fatal(self.failure)
            return
        self.ready = True
        self.metrics.model_loaded.set(1)
        self.enroller.sync.start()  # people enrolled or deleted through other replicas
        self._settled.set()
        log.info(
            "ready: %s %s on %s (%s%s), %d users, %d slots (%s padding), in %.1fs",
            pipe.name, pipe.version, engine.device, engine.dtype, ", compiled" if engine.compiled else "",
            len(pipe.users), engine.slots, engine.padding, time.perf_counter() - t0,
        )
