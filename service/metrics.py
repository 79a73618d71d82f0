"""Prometheus metrics (names pinned in docs/internals.md), in a per-app registry so tests can build many
apps."""

from __future__ import annotations

import os
import resource

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

# Generation takes milliseconds on a GPU and up to minutes for 1000-step DDPM on a CPU.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)  # one step: ms on a GPU
REJECTION_REASONS = (
    "queue_full", "overloaded", "too_long", "timeout", "unauthorized", "not_ready", "invalid",
    "unknown_user", "disconnected",
)
ROW_EXITS = ("finished", "cancelled", "failed")
CANCEL_REASONS = ("timeout", "disconnected", "server")
# Route label values are route templates or "other", never a raw path, so the label set stays bounded.
OTHER_ROUTE = "other"


class Metrics:
    """All service metrics; labels never carry a user ID, seed or request body."""

    def __init__(self, registry: CollectorRegistry | None = None, routes: tuple[str, ...] = ()) -> None:
        r = self.registry = registry or CollectorRegistry()

        def metric(kind, name: str, doc: str, labels: tuple[str, ...] = (), **kw):
            return kind(f"dopplergen_{name}", doc, list(labels), registry=r, **kw)

        secs, steps = {"buckets": SECONDS_BUCKETS}, {"buckets": STEP_BUCKETS}
        self.requests = metric(Counter, "requests_total", "HTTP requests by route template and status code.",
                               ("route", "status"))
        self.request_latency = metric(Histogram, "request_latency_seconds", "HTTP request latency.",
                                      ("route",), **secs)
        self.queue_wait = metric(Histogram, "queue_wait_seconds",
                                 "Time a sample waited before its first denoising step.", **secs)
        self.inference = metric(Histogram, "inference_seconds",
                                "A request's first step to its last sample decoded.", **secs)
        self.batch_size = metric(Histogram, "batch_size", "Rows per denoising step (before padding).",
                                 buckets=BATCH_BUCKETS)
        # --- step-level batching ---
        self.step_seconds = metric(Histogram, "step_seconds",
                                   "Wall time of one denoising step over the slots.", **steps)
        self.slot_occupancy = metric(Gauge, "slot_occupancy",
                                     "Share of the slots (max_batch_size) used by the last step.")
        self.rows_joined = metric(Counter, "rows_joined_total", "Rows (samples) that took their first step.")
        self.rows_left = metric(Counter, "rows_left_total", "Rows that left the slots, by why.", ("reason",))
        self.cancellations = metric(Counter, "cancellations_total",
                                    "Requests cancelled before they finished.", ("reason",))
        self.job_chunks = metric(Counter, "job_chunks_total", "Chunks of device jobs run between steps.")
        self.samples = metric(Counter, "samples_generated_total", "Samples generated.")
        self.rejections = metric(Counter, "rejections_total", "Requests refused or abandoned, by reason.",
                                 ("reason",))
        self.batch_failures = metric(Counter, "batch_failures_total", "Batches that raised an exception.")
        self.queue_depth = metric(Gauge, "queue_depth", "Samples waiting in the queue.")
        self.model_loaded = metric(Gauge, "model_loaded", "1 once the pipeline is loaded and warmed up.")
        self.device_memory = metric(Gauge, "device_memory_bytes",
                                    "CUDA allocated/reserved bytes, and process RSS.", ("kind",))
        self.model_info = metric(Info, "model", "The pipeline being served.")
        # Export every bounded series from the start, so dashboards and rate() see zeros instead of gaps.
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason=reason)
        for reason in ROW_EXITS:
            self.rows_left.labels(reason=reason)
        for reason in CANCEL_REASONS:
            self.cancellations.labels(reason=reason)
        for route in (*routes, OTHER_ROUTE):
            self.request_latency.labels(route=route)

    def reject(self, reason: str) -> None:
        if reason not in REJECTION_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.rejections.labels(reason=reason).inc()

    def set_model(self, *, name: str, version: str, route: str, device: str, dtype: str) -> None:
        self.model_info.info(
            {"name": name, "version": version, "route": route, "device": device, "dtype": dtype}
        )

    def refresh_device_memory(self, device: str | None) -> None:
        self.device_memory.labels(kind="rss").set(_rss_bytes())
        if device and device.startswith("cuda"):
            import torch

            if torch.cuda.is_initialized():
                self.device_memory.labels(kind="allocated").set(torch.cuda.memory_allocated(device))
                self.device_memory.labels(kind="reserved").set(torch.cuda.memory_reserved(device))

    def render(self, device: str | None) -> bytes:
        self.refresh_device_memory(device)
        return generate_latest(self.registry)


def _rss_bytes() -> int:
    """Current resident set size from /proc; peak RSS from getrusage where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
