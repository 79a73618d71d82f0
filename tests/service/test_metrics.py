"""/metrics: Prometheus text that parses, carries every pinned name, moves with traffic, never labels users or
seeds."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import serve

pytestmark = pytest.mark.anyio

PINNED = {  # docs/internals.md
    "dopplergen_requests_total", "dopplergen_request_latency_seconds_bucket",
    "dopplergen_queue_wait_seconds_bucket",
    "dopplergen_inference_seconds_bucket", "dopplergen_batch_size_bucket",
    "dopplergen_samples_generated_total",
    "dopplergen_rejections_total", "dopplergen_batch_failures_total", "dopplergen_queue_depth",
    "dopplergen_model_loaded", "dopplergen_device_memory_bytes", "dopplergen_model_info",
    "dopplergen_step_seconds_bucket", "dopplergen_slot_occupancy", "dopplergen_rows_joined_total",
    "dopplergen_rows_left_total", "dopplergen_cancellations_total", "dopplergen_job_chunks_total",
}


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_parse_and_counters_move(make_app, fake):
    app = make_app(fake, max_batch_size=8, max_wait_ms=100)
    async with serve(app) as client:
        before = scrape((await client.get("/metrics")).text)
        # Everything but the request counter (which needs a finished request) is there from the start.
        assert PINNED - {name for name, _ in before} == {"dopplergen_requests_total"}
        assert value(before, "dopplergen_model_loaded") == 1.0
        assert value(before, "dopplergen_device_memory_bytes", kind="rss") > 10e6
        info = [dict(labels) for name, labels in before if name == "dopplergen_model_info"][0]
        assert info == {"name": "dopplergen-tiny", "version": "test", "route": "kl", "device": "cpu",
                        "dtype": "fp32"}

        await client.post("/generate", json={"user_id": "alice", "num_samples": 3, "seed": 777})
        await client.post("/generate", json={"user_id": "zed-the-unknown", "seed": 778})
        await client.post("/generate", json={"user_id": "alice", "num_samples": 0})
        response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = scrape(response.text)
    assert PINNED <= {name for name, _ in after}
    assert value(after, "dopplergen_requests_total", route="/generate", status="200") == 1
    assert value(after, "dopplergen_requests_total", route="/generate", status="404") == 1
    assert value(after, "dopplergen_requests_total", route="/generate", status="422") == 1
    assert value(after, "dopplergen_requests_total", route="/metrics", status="200") == 1
    assert value(after, "dopplergen_samples_generated_total") == 3
    # step-level batching: 20 steps (the default) of the request's 3 rows
    assert (
        value(after, "dopplergen_batch_size_count") == 20 and value(after, "dopplergen_batch_size_sum") == 60
    )
    assert value(after, "dopplergen_step_seconds_count") == 20
    assert value(after, "dopplergen_rows_joined_total") == 3
    assert value(after, "dopplergen_rows_left_total", reason="finished") == 3
    assert value(after, "dopplergen_queue_wait_seconds_count") == 3
    assert value(after, "dopplergen_inference_seconds_count") == 1
    assert value(after, "dopplergen_request_latency_seconds_count", route="/generate") == 3
    assert value(after, "dopplergen_rejections_total", reason="unknown_user") == 1
    assert value(after, "dopplergen_rejections_total", reason="invalid") == 1
    assert value(after, "dopplergen_queue_depth") == 0
    label_values = {v for _, labels in after for _, v in labels}
    assert not label_values & {"alice", "zed-the-unknown", "777", "778"}


async def test_each_app_has_its_own_registry(make_app, fake):
    a, b = make_app(fake), make_app(fake)
    assert a.state.service.metrics.registry is not b.state.service.metrics.registry
