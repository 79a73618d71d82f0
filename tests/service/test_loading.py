"""A pipeline whose dopplergen.json is faulty never becomes ready: `dopplergen serve` refuses it naming the
field, and an app built around it stays not-ready (503) instead of answering 200 on /readyz and 500 on
/generate."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import serve


@pytest.fixture
def no_normalisation(tiny_pipeline_dir, tmp_path) -> Path:
    folder = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir, folder)
    meta = json.loads((folder / "dopplergen.json").read_text())
    del meta["normalization"]
    (folder / "dopplergen.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.anyio
async def test_readyz_never_turns_200_when_the_metadata_is_faulty(no_normalisation):
    app = create_app(Settings(pipeline=no_normalisation, max_wait_ms=5))
    service = app.state.service
    statuses = []
    async with serve(app, wait_ready=False) as client:
        for _ in range(200):  # until loading has settled, and a few probes after
            statuses.append((await client.get("/readyz")).status_code)
            if service.status == "failed" and len(statuses) > 3:
                break
            await asyncio.sleep(0.05)
        generate = await client.post("/generate", json={"user_id": "alice", "seed": 1})
        health = await client.get("/healthz")
    assert service.status == "failed" and "normalization" in service.failure
    assert 200 not in statuses and set(statuses) == {503}
    assert generate.status_code == 503 and generate.json()["error"] == "not_ready"
    assert health.status_code == 503 and "normalization" not in health.text  # the cause is for the log only


@pytest.mark.slow
def test_serve_exits_naming_the_field(no_normalisation, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOPPLERGEN_")} | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "training", "serve", "--pipeline", str(no_normalisation),
                          "--port", "0"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "dopplergen.json: normalization: Field required" in out.stderr
