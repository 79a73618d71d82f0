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
        self.requests = Counter(
            "dopplergen_requests_total", "HTTP requests by route template and status code.",
            ["route", "status"], registry=r,
        )
        self.request_latency = Histogram(
            "dopplergen_request_latency_seconds", "HTTP request latency.", ["route"],
            buckets=SECONDS_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "dopplergen_queue_wait_seconds", "Time a sample waited before its first denoising step.",
            buckets=SECONDS_BUCKETS, registry=r,
        )
        self.inference = Histogram(
            "dopplergen_inference_seconds", "A request's first step to its last sample decoded.",
            buckets=SECONDS_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "dopplergen_batch_size", "Rows per denoising step (before padding).",
            buckets=BATCH_BUCKETS, registry=r,
        )
        # --- step-level batching ---
        self.step_seconds = Histogram(
            "dopplergen_step_seconds", "Wall time of one denoising step over the slots.",
            buckets=STEP_BUCKETS, registry=r,
        )
        self.slot_occupancy = Gauge(
            "dopplergen_slot_occupancy", "Share of the slots (max_batch_size) used by the last step.",
            registry=r,
        )
        self.rows_joined = Counter(
            "dopplergen_rows_joined_total", "Rows (samples) that took their first step.", registry=r
        )
        self.rows_left = Counter(
            "dopplergen_rows_left_total", "Rows that left the slots, by why.", ["reason"], registry=r
        )
        self.cancellations = Counter(
            "dopplergen_cancellations_total", "Requests cancelled before they finished.", ["reason"],
            registry=r,
        )
        self.job_chunks = Counter(
            "dopplergen_job_chunks_total", "Chunks of device jobs run between steps.", registry=r
        )
        self.samples = Counter("dopplergen_samples_generated_total", "Samples generated.", registry=r)
        self.rejections = Counter(
            "dopplergen_rejections_total", "Requests refused or abandoned, by reason.", ["reason"], registry=r
        )
        self.batch_failures = Counter(
            "dopplergen_batch_failures_total", "Batches that raised an exception.", registry=r
        )
        self.queue_depth = Gauge("dopplergen_queue_depth", "Samples waiting in the queue.", registry=r)
        self.model_loaded = Gauge(
            "dopplergen_model_loaded", "1 once the pipeline is loaded and warmed up.", registry=r
        )
        self.device_memory = Gauge(
            "dopplergen_device_memory_bytes", "CUDA allocated/reserved bytes, and process RSS.", ["kind"],
            registry=r,
        )
        self.model_info = Info("dopplergen_model", "The pipeline being served.", registry=r)
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
