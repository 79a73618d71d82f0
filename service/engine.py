"""The device side of the service: load the pipeline, warm it up, and run batches on one dedicated thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from models.pipeline import DopplerPipeline
from models.sampling import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLERS_BY_ROUTE,
    default_sampler,
    sample,
)
from service.batcher import BatchKey
from service.settings import Settings, torch_dtype

log = logging.getLogger("dopplergen.engine")

# Same signature as models.sampling.sample; tests inject slow or failing fakes.
SampleFn = Callable[..., torch.Tensor]
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class Engine:
    """Owns the pipeline on its device. Every method that touches the model runs on `executor` (one thread)."""

    def __init__(
        self, settings: Settings, pipeline: DopplerPipeline | None = None, sample_fn: SampleFn | None = None
    ) -> None:
        self.settings = settings
        self.pipe = pipeline
        self.sample_fn = sample_fn or sample
        if pipeline is not None:  # injected (tests, embedding): serve it where it already is
            self.device, self.dtype = str(pipeline.device), DTYPE_NAMES.get(pipeline.dtype, str(pipeline.dtype))
        else:
            self.device = settings.resolved_device()
            self.dtype = settings.resolved_dtype(self.device)
        self.padding = settings.resolved_padding(self.device)
        # One thread: CUDA work stays on one stream and batches never overlap on the device.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dopplergen-device")

    # ---- runs on the device thread -----------------------------------------------------------------------
    def load(self) -> DopplerPipeline:
        if self.pipe is None:
            log.info("loading pipeline from %s onto %s (%s)", self.settings.pipeline, self.device, self.dtype)
            self.pipe = DopplerPipeline.load(self.settings.pipeline, device=self.device, dtype=torch_dtype(self.dtype))
        return self.pipe

    def warmup(self) -> None:
        """One tiny batch at the serving shape, so the first request pays no kernel selection or allocation."""
        self.sample_fn(
            self.pipe, [0], [0], num_inference_steps=2, guidance_scale=self.default_guidance,
            scheduler=self.default_scheduler, pad_to=self.pad_to,
        )

    def run_batch(self, key: BatchKey, user_indices: list[int], seeds: list[int]) -> list[np.ndarray]:
        """Sample a batch -> one float32 (C, H, W) dB array per sample."""
        out = self._sample(key, user_indices, seeds, self.pad_to)
        return list(out.numpy())

    def _sample(self, key: BatchKey, users: list[int], seeds: list[int], pad_to: int | None) -> torch.Tensor:
        try:
            return self.sample_fn(
                self.pipe, users, seeds, num_inference_steps=key.num_inference_steps,
                guidance_scale=key.guidance_scale, scheduler=key.scheduler, pad_to=pad_to,
            )
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if pad_to is not None and pad_to > len(seeds):
                # The padding rows alone may be what does not fit: first drop them, keeping the batch whole.
                log.warning("out of device memory at padded batch %d; retrying unpadded", pad_to)
                return self._sample(key, users, seeds, None)
            if len(seeds) == 1:
                raise
            # Halve and retry; each sample has its own generator, so the split changes no sample's noise.
            half = len(seeds) // 2
            log.warning("out of device memory at batch %d; retrying as %d + %d", len(seeds), half, len(seeds) - half)
            return torch.cat(
                [self._sample(key, users[:half], seeds[:half], None), self._sample(key, users[half:], seeds[half:], None)]
            )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- facts about the loaded model (valid once load() has run) ----------------------------------------
    @property
    def pad_to(self) -> int | None:
        return self.settings.max_batch_size if self.padding == "fixed" else None

    @property
    def default_steps(self) -> int:
        return int(self.pipe.meta.get("num_inference_steps", DEFAULT_STEPS)) if self.pipe else DEFAULT_STEPS

    @property
    def default_guidance(self) -> float:
        return float(self.pipe.meta.get("guidance_scale", DEFAULT_GUIDANCE)) if self.pipe else DEFAULT_GUIDANCE

    @property
    def max_steps(self) -> int:
        """The configured cap, never above the training schedule's length (DDPM cannot take more steps)."""
        train_steps = int(self.pipe.scheduler_config.get("num_train_timesteps", 1000)) if self.pipe else 1000
        return min(self.settings.max_steps, train_steps)

    @property
    def default_scheduler(self) -> str:
        return str(self.pipe.meta.get("scheduler", default_sampler(self.pipe.route))) if self.pipe else DEFAULT_SAMPLER

    @property
    def schedulers(self) -> tuple[str, ...]:
        """What this pipeline's route can sample with: code-index diffusion or the continuous schedulers."""
        return SAMPLERS_BY_ROUTE[self.pipe.route if self.pipe is not None else "kl"]
