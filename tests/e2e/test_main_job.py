"""The README's main command (`make serve`) reaches ready on the shipped demo checkpoint and answers
/generate."""

from __future__ import annotations

import io
import os
import signal
import subprocess

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import REPO, free_port, http_ready, log_tail, wait_for

DEMO = REPO / "checkpoints" / "demo"


@pytest.mark.slow
def test_make_serve_answers_generate_with_the_demo_checkpoint(tmp_path):
    assert (DEMO / "dopplergen.json").is_file(), \
        "the demo checkpoint must be committed under checkpoints/demo"
    port = free_port()
    log = tmp_path / "make-serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOPPLERGEN_")}
    env["DOPPLERGEN_MAX_BATCH_SIZE"] = "2"  # fewer slots: less warm-up (one bucket per power of two) on CI
    with open(log, "wb") as fh:
        # Exactly the README's command, on a free port; its own process group so teardown reaches uvicorn.
        proc = subprocess.Popen(
            ["make", "serve", f"PORT={port}"], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    try:
        wait_for(http_ready(proc, f"{url}/readyz", log, "make serve"), 600, "make serve to become ready",
                 interval_s=1.0, detail=lambda: log_tail(log))
        info = httpx.get(f"{url}/info", timeout=10).json()
        users = httpx.get(f"{url}/users", timeout=10).json()
        assert info["model"]["route"] == "kl" and info["image_size"] == [64, 64]
        assert users["count"] == 10  # the default simulated benchmark: 10 people
        user = users["users"][0]
        r = httpx.post(
            f"{url}/generate",
            json={"user_id": user, "num_samples": 1, "seed": 1, "num_inference_steps": 10},
            headers={"Accept": "image/png"},
            timeout=300,
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        img = Image.open(io.BytesIO(r.content))
        assert img.size == (64, 64)
        assert len(set(img.getdata())) > 16  # a spectrogram, not a blank image
        # The demo is trained with walking speed and aspect angle (issue 15): /info lists them with their
        # ranges, a request may set them (echoed per item), and a value outside the trained range is a 422
        # naming it.
        assert {"speed_mps", "aspect_deg"} <= set(info["conditions"])
        lo, hi = info["conditions"]["speed_mps"]["range"]
        r = httpx.post(
            f"{url}/generate",
            json={
                "user_id": user, "num_samples": 1, "seed": 1, "num_inference_steps": 5,
                "speed_mps": (lo + hi) / 2, "aspect_deg": 30, "format": "npy",
            },
            timeout=300,
        )
        assert r.status_code == 200, r.text
        assert r.json()["items"][0]["conditions"]["aspect_deg"] == 30
        r = httpx.post(f"{url}/generate", json={"user_id": user, "speed_mps": hi + 1}, timeout=30)
        assert r.status_code == 422 and "speed_mps" in r.text
        # ... and with activities (issue 34): the README's fall request answers, with no walking speed
        assert "fall" in info["conditions"]["activity"]["values"]
        r = httpx.post(f"{url}/generate", json={"user_id": "user03", "activity": "fall", "format": "npy",
                                                "num_inference_steps": 5}, timeout=300)
        assert r.status_code == 200, r.text
        cond = r.json()["items"][0]["conditions"]
        assert cond["activity"] == "fall" and cond["speed_mps"] is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
