"""`dopplergen serve` as a real uvicorn process on a loopback port: raw PNG, metrics, disconnect, SIGTERM
drain.

One server for the module (starting Python + torch is the slow part); the SIGTERM test stops it, so it runs
last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import free_port, http_ready, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[2]
LONG = {"user_id": "alice", "num_inference_steps": 60, "format": "npy"}  # ~0.5-2 s on the tiny model


def metric(base: str, name: str, **labels) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


@pytest.fixture(scope="module")
def server(tiny_pipeline_dir, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOPPLERGEN_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "training.cli", "serve", "--pipeline", tiny_pipeline_dir, "--port",
           str(port),
           "--max-batch-size", "2", "--max-wait-ms", "20"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    wait_for(http_ready(proc, f"{base}/readyz", log_path, "dopplergen serve"), 90, "readiness")
    yield proc, base, log_path
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_raw_png_and_metrics_over_real_http(server):
    _, base, _ = server
    r = httpx.post(f"{base}/generate", json={"user_id": "bob", "seed": 1, "num_inference_steps": 2},
                   headers={"Accept": "image/png"}, timeout=60)
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG") and r.headers["x-dopplergen-seed"] == "1"
    assert metric(base, "dopplergen_requests_total", route="/generate", status="200") == 1
    assert metric(base, "dopplergen_model_loaded") == 1


def test_a_client_that_hangs_up_has_its_queued_work_dropped(server):
    _, base, _ = server
    generated = metric(base, "dopplergen_samples_generated_total")
    started = metric(base, "dopplergen_queue_wait_seconds_count")
    result = {}
    blocker = threading.Thread(
        target=lambda: result.setdefault(
            "r", httpx.post(f"{base}/generate", json={**LONG, "num_samples": 2}, timeout=60)
        )
    )
    blocker.start()
    wait_for(lambda: metric(base, "dopplergen_queue_wait_seconds_count") >= started + 2, 30,
             "the blocking batch")
    with pytest.raises(httpx.ReadTimeout):  # queued behind the blocker; the client gives up and closes
        httpx.post(f"{base}/generate", json={**LONG, "seed": 99}, timeout=0.3)
    blocker.join(60)
    assert result["r"].status_code == 200
    wait_for(lambda: metric(base, "dopplergen_rejections_total", reason="disconnected") == 1, 10,
             "the disconnect")
    time.sleep(0.3)
    assert metric(base, "dopplergen_samples_generated_total") == generated + 2  # the dropped sample never ran
    assert metric(base, "dopplergen_queue_depth") == 0


def test_sigterm_finishes_in_flight_and_queued_requests_then_exits_0(server):
    proc, base, log_path = server
    started = metric(base, "dopplergen_queue_wait_seconds_count")
    results: dict[str, httpx.Response] = {}

    def post(name: str, body: dict) -> None:
        results[name] = httpx.post(f"{base}/generate", json=body, timeout=60)

    running = threading.Thread(target=post, args=("running", {**LONG, "num_samples": 2, "seed": 1}))
    running.start()
    wait_for(lambda: metric(base, "dopplergen_queue_wait_seconds_count") >= started + 2, 30,
             "the first batch")
    queued = threading.Thread(target=post, args=("queued", {**LONG, "seed": 5}))
    queued.start()
    wait_for(lambda: metric(base, "dopplergen_queue_depth") == 1, 10, "the queued request")
    proc.send_signal(signal.SIGTERM)
    running.join(60)
    queued.join(60)
    assert proc.wait(timeout=60) == 0
    assert results["running"].status_code == 200 and len(results["running"].json()["items"]) == 2
    assert results["queued"].status_code == 200 and results["queued"].json()["seeds"] == [5]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)
    log = log_path.read_text()
    assert "ready:" in log and "Shutting down" in log and "stopped" in log
    assert "alice" not in log and "bob" not in log  # no user IDs in the logs
