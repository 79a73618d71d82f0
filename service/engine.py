"""The device side of the service: load the pipeline, compile and warm it up, and step rows on one thread.

The engine knows the model and the device; the scheduling of rows into slots is service.worker's. A
`Stepper` is the model seen row by row (models.sampling's start_row / step_rows / finish_rows); tests
inject a fake one. Every method that touches the model runs on `executor`, one dedicated thread.

Padding (settings.batch_padding): `fixed` runs every step at `max_batch_size` rows (bitwise identical
samples whatever shares the device, but a lone request pays for a full batch); `buckets` pads to the next
power of two (1, 2, 4, ... max_batch_size): a lone request runs at its own size, and the few shapes are
what CUDA graphs capture; `none` runs the exact row count. On CUDA, `compile` wraps the denoiser in
torch.compile(mode="reduce-overhead") and warms every bucket before /readyz turns ready.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from models.pipeline import DopplerPipeline
from models.sampling import SAMPLERS_BY_ROUTE, finish_rows, resolve, start_row, step_rows
from service.settings import Settings, torch_dtype

log = logging.getLogger("dopplergen.engine")
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
EMA = 0.2  # weight of the newest step time in the running estimate per batch shape


@dataclass(frozen=True)
class RowSpec:
    """What a request asks of each of its rows (the seed is per row)."""

    user_index: int
    steps: int
    guidance: float
    sampler: str
    # seed -> that row's (K,) condition values, NaN = absent (pipelines with conditions; omitted ones drawn
    # per seed)
    conditions: dict[int, torch.Tensor] | None = None
    condition_guidance: float | None = None  # g_c of models.sampling's compositional guidance; None = plain


class Stepper(Protocol):
    """The model, one row at a time: start a row, step a batch of rows, decode a finished row."""

    def start(self, pipe: DopplerPipeline, spec: RowSpec, seed: int) -> Any: ...
    def step(self, pipe: DopplerPipeline, rows: list[Any], pad_to: int | None, cfg: bool | None) -> None: ...
    def finish(self, pipe: DopplerPipeline, rows: list[Any], one_by_one: bool) -> list[np.ndarray]: ...


class ModelStepper:
    """models.sampling's rows; `denoiser` is the compiled network when compilation is on."""

    def __init__(self) -> None:
        self.denoiser: Any = None

    def start(self, pipe: DopplerPipeline, spec: RowSpec, seed: int) -> Any:
        conditions = None if spec.conditions is None else spec.conditions[int(seed)]
        return start_row(pipe, spec.user_index, seed, spec.steps, spec.guidance, spec.sampler, conditions,
                         spec.condition_guidance)

    def step(self, pipe: DopplerPipeline, rows: list[Any], pad_to: int | None, cfg: bool | None) -> None:
        if self.denoiser is not None:
            # the previous step's graph outputs may be overwritten now
            torch.compiler.cudagraph_mark_step_begin()
        step_rows(pipe, rows, pad_to, cfg, self.denoiser)

    def finish(self, pipe: DopplerPipeline, rows: list[Any], one_by_one: bool) -> list[np.ndarray]:
        return list(finish_rows(pipe, rows, one_by_one).numpy())  # (C, H, W) float32 dB each


class Engine:
    """Owns the pipeline on its device, the padding policy and the measured cost of a step."""

    def __init__(self, settings: Settings, pipeline: DopplerPipeline | None = None,
                 stepper: Stepper | None = None):
        self.settings = settings
        self.pipe = pipeline
        self.stepper = stepper or ModelStepper()
        if pipeline is not None:  # injected (tests, embedding): serve it where it already is
            self.device, self.dtype = (
                str(pipeline.device), DTYPE_NAMES.get(pipeline.dtype, str(pipeline.dtype))
            )
        else:
            self.device = settings.resolved_device()
            self.dtype = settings.resolved_dtype(self.device)
        self.padding = settings.resolved_padding(self.device)
        self.compiled = False
        self.slots = settings.max_batch_size  # rows per step; halved on CUDA out-of-memory
        self.step_s: dict[int, float] = {}  # running estimate of one step's wall time, by padded batch
        self.decode_s = 0.0  # running estimate of one row's decode
        # One thread: CUDA work stays on one stream and steps never overlap on the device.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dopplergen-device")

    # ---- runs on the device thread -----------------------------------------------------------------------
    def load(self) -> DopplerPipeline:
        if self.pipe is None:
            log.info("loading pipeline from %s onto %s (%s)", self.settings.pipeline, self.device, self.dtype)
            self.pipe = DopplerPipeline.load(
                self.settings.pipeline, device=self.device, dtype=torch_dtype(self.dtype)
            )
        return self.pipe

    def warmup(self) -> None:
        """Compile (when on) and run a few steps at every padded shape: kernels chosen, graphs captured, step
        cost measured."""
        if self.settings.resolved_compile(self.device) and self.pipe.route != "vq-diffusion":
            if isinstance(self.stepper, ModelStepper):
                log.info("compiling the denoiser (reduce-overhead) for batches %s", self.buckets)
                cfg = torch._dynamo.config  # one graph per bucket: allow that many recompilations
                for name in ("cache_size_limit", "recompile_limit"):
                    if hasattr(cfg, name):
                        setattr(cfg, name, max(getattr(cfg, name), len(self.buckets) + 2))
                self.stepper.denoiser = torch.compile(
                    self.pipe.denoiser, mode="reduce-overhead", dynamic=False
                )
                self.compiled = True
        plain = resolve(self.pipe)
        spec = RowSpec(0, 4, plain.guidance, plain.sampler)
        finished = None
        for b in self.buckets if self.padding != "none" else sorted({1, self.slots}):
            rows = [self.start(spec, 0) for _ in range(b)]
            times = []
            try:
                while not rows[0].done:  # CUDA graphs record on the second call and replay from the third
                    times.append(self.step(rows))
            except torch.cuda.OutOfMemoryError:
                if b == 1:
                    raise
                self.slots = max(k for k in self.buckets if k < b)  # serve only the shapes that fit
                log.warning("out of device memory at %d rows while warming up: %d slots", b, self.slots)
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
                break
            # the first calls' one-off costs (kernel choice, graph capture) do not count; the median of the
            # rest
            self.step_s[self.pad_for(b) or b] = float(np.median(times[2 if self.compiled else 1:]))
            finished = rows[0]
        t0 = time.perf_counter()
        self.finish([finished])
        self.decode_s = time.perf_counter() - t0

    def start(self, spec: RowSpec, seed: int) -> Any:
        return self.stepper.start(self.pipe, spec, seed)

    def step(self, rows: list[Any]) -> float:
        """One denoising step over `rows` at the padded shape; returns its wall time and updates the
        estimate."""
        pad = self.pad_for(len(rows))
        # fixed shapes: always both CFG halves
        cfg = True if (self.padding == "fixed" or self.compiled) else None
        t0 = time.perf_counter()
        self.stepper.step(self.pipe, rows, pad, cfg)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        key = pad or len(rows)
        old = self.step_s.get(key)
        self.step_s[key] = elapsed if old is None else (1 - EMA) * old + EMA * elapsed
        return elapsed

    def finish(self, rows: list[Any]) -> list[np.ndarray]:
        """Decode finished rows: in one batch (a GPU decodes 64 as fast as 1), or each alone with fixed
        padding, so that a sample's bits never depend on which rows finished with it."""
        t0 = time.perf_counter()
        out = self.stepper.finish(self.pipe, rows, self.padding == "fixed")
        self.decode_s = (1 - EMA) * self.decode_s + EMA * (time.perf_counter() - t0) / max(len(rows), 1)
        return out

    def shrink(self) -> bool:
        """After CUDA out-of-memory: halve the slot count (kept from then on); False when already at one
        row."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.slots == 1:
            return False
        self.slots //= 2
        log.warning("out of device memory: serving at most %d rows per step from now on", self.slots)
        return True

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- shapes and costs --------------------------------------------------------------------------------
    @property
    def buckets(self) -> list[int]:
        """The padded batch sizes: powers of two below the slot count, and the slot count itself."""
        if self.padding == "fixed":
            return [self.slots]
        out, b = [], 1
        while b < self.slots:
            out.append(b)
            b *= 2
        return out + [self.slots]

    def pad_for(self, n: int) -> int | None:
        if self.padding == "none":
            return None
        return next(b for b in self.buckets if b >= n) if n <= self.slots else n

    def est_step_s(self, n: int) -> float | None:
        """Estimated wall time of a step over n rows (None before anything was measured)."""
        if not self.step_s:
            return None
        key = self.pad_for(min(n, self.slots)) or min(n, self.slots)
        if key in self.step_s:
            return self.step_s[key]
        above = [b for b in self.step_s if b >= key]
        if above:
            return self.step_s[min(above)]
        top = max(self.step_s)
        return self.step_s[top] * key / top

    # ---- facts about the loaded model (valid once load() has run) ----------------------------------------
    @property
    def max_steps(self) -> int:
        """The configured cap, never above the training schedule's length (DDPM cannot take more steps)."""
        train_steps = int(self.pipe.scheduler_config.get("num_train_timesteps", 1000)) if self.pipe else 1000
        return min(self.settings.max_steps, train_steps)

    @property
    def samplers(self) -> tuple[str, ...]:
        """What this pipeline's route can sample with: code-index diffusion or the continuous schedulers."""
        return SAMPLERS_BY_ROUTE[self.pipe.route if self.pipe is not None else "kl"]
