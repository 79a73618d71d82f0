"""The HTTP contract in-process: response shapes, formats, catalog and health routes, and every error code."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.encoding import decode_png_db
from service.settings import Settings
from tests.service.conftest import FakeStepper, serve

pytestmark = pytest.mark.anyio


async def test_generate_json_png_items_carry_seed_shape_scale_and_timings(make_app, fake):
    async with serve(make_app(fake)) as client:
        r = await client.post("/generate", json={"user_id": "bob", "num_samples": 2, "seed": 41})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["seeds"] == [41, 42] and [it["seed"] for it in out["items"]] == [41, 42]
    assert out["model"] == {"name": "dopplergen-tiny", "version": "test", "route": "kl"}
    assert (out["num_inference_steps"] == 20 and out["guidance_scale"] == 2.0
            and out["scheduler"] == "dpmsolver++")
    assert set(out["timings"]) == {"queue_ms", "inference_ms", "total_ms"}
    assert out["timings"]["total_ms"] >= out["timings"]["inference_ms"] >= 0
    item = out["items"][1]
    assert item["format"] == "png" and item["media_type"] == "image/png" and item["shape"] == [1, 32, 32]
    assert item["db_range"] == [-60.0, 0.0] and item["dtype"] == "uint8"
    png = base64.b64decode(item["data"])
    img = Image.open(io.BytesIO(png))
    assert img.size == (32, 32) and img.mode == "L"
    assert (img.text["dyn_range_db"] == "60"
            and img.text["mapping"] == item["mapping"] == "db = -60 + 60 * value / 255")
    assert img.text["seed"] == "42"
    assert np.allclose(decode_png_db(png), -42.0, atol=60 / 255)  # the fake writes -(seed % 60) dB
    assert fake.calls[0]["users"] == [1, 1]  # bob is index 1


async def test_generate_npy_16bit_and_colormap(make_app, fake):
    async with serve(make_app(fake)) as client:
        npy = (await client.post("/generate", json={"user_id": "carol", "seed": 3, "format": "npy"})).json()
        deep = (await client.post("/generate", json={"user_id": "carol", "seed": 3, "bit_depth": 16})).json()
        cmap = (
            await client.post("/generate", json={"user_id": "carol", "seed": 3, "colormap": "viridis"})
        ).json()
    arr = np.load(io.BytesIO(base64.b64decode(npy["items"][0]["data"])), allow_pickle=False)
    assert arr.dtype == np.float32 and arr.shape == (1, 32, 32) and np.all(arr == -3.0)
    assert npy["items"][0]["dtype"] == "float32" and npy["items"][0]["media_type"] == "application/x-npy"
    img16 = Image.open(io.BytesIO(base64.b64decode(deep["items"][0]["data"])))
    assert img16.mode == "I;16" and deep["items"][0]["mapping"] == "db = -60 + 60 * value / 65535"
    assert np.allclose(decode_png_db(base64.b64decode(deep["items"][0]["data"])), -3.0, atol=1e-3)
    rgb = Image.open(io.BytesIO(base64.b64decode(cmap["items"][0]["data"])))
    assert (rgb.mode == "RGB" and cmap["items"][0]["colormap"] == "viridis"
            and "viridis" in rgb.text["mapping"])


async def test_null_seed_draws_distinct_random_seeds_and_echoes_them(make_app, fake):
    async with serve(make_app(fake)) as client:
        out = (
            await client.post("/generate", json={"user_id": "alice", "num_samples": 4, "seed": None})
        ).json()
    assert len(set(out["seeds"])) == 4 and fake.calls[0]["seeds"] == out["seeds"]


async def test_accept_image_png_returns_the_raw_png(make_app, fake):
    async with serve(make_app(fake)) as client:
        r = await client.post("/generate", json={"user_id": "alice", "seed": 5},
                              headers={"Accept": "image/png"})
        both = await client.post("/generate", json={"user_id": "alice", "num_samples": 2},
                                 headers={"Accept": "image/png"})
        prefers_json = await client.post("/generate", json={"user_id": "alice"},
                                         headers={"Accept": "image/png;q=0.5, application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-dopplergen-seed"] == "5" and r.headers["x-dopplergen-dyn-range-db"] == "60"
    assert Image.open(io.BytesIO(r.content)).text["seed"] == "5"
    assert both.status_code == 406 and "num_samples 1" in both.json()["message"]
    assert prefers_json.status_code == 200 and prefers_json.headers["content-type"] == "application/json"


async def test_users_info_health_docs(make_app, fake):
    async with serve(make_app(fake, max_batch_size=8)) as client:
        users = (await client.get("/users")).json()
        info = (await client.get("/info")).json()
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        assert (await client.get("/docs")).status_code == 200
        assert "/generate" in (await client.get("/openapi.json")).json()["paths"]
    assert users == {"users": ["alice", "bob", "carol"], "count": 3, "enrolled": []}
    assert info["model"]["name"] == "dopplergen-tiny" and info["image_size"] == [32, 32]
    assert info["db_range"] == [-60.0, 0.0] and info["device"] == "cpu" and info["dtype"] == "fp32"
    assert info["batching"]["max_batch_size"] == 8 and info["batching"]["batch_padding"] == "buckets"
    assert info["schedulers"] == ["ddpm", "ddim", "dpmsolver++"]
    assert info["limits"]["max_steps"] == 1000 and info["auth_required"] is False


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": "alice", "num_samples": 0}, "num_samples"),
        ({"user_id": "alice", "num_samples": 5}, "num_samples"),  # over max_samples_per_request=4
        ({"user_id": "alice", "num_inference_steps": 0}, "num_inference_steps"),
        ({"user_id": "alice", "num_inference_steps": 51}, "num_inference_steps"),  # over max_steps=50
        ({"user_id": "alice", "guidance_scale": -1}, "guidance_scale"),
        ({"user_id": "alice", "seed": -1}, "seed"),
        ({"user_id": "alice", "seed": "abc"}, "seed"),
        ({"user_id": "alice", "scheduler": "euler"}, "scheduler"),
        ({"user_id": "alice", "format": "jpeg"}, "format"),
        ({"user_id": "alice", "colormap": "rainbowz"}, "colormap"),
        ({"user_id": "alice", "format": "npy", "colormap": "jet"}, "colormap"),
        ({"user_id": "alice", "bit_depth": 16, "colormap": "jet"}, "bit_depth"),
        ({"user_id": "alice", "bit_depth": 12}, "bit_depth"),
        ({"user_id": "alice", "nmu_samples": 2}, "nmu_samples"),
        ({"user_id": ""}, "user_id"),
        ({}, "user_id"),
        ([1, 2], "body"),
    ],
)
async def test_invalid_fields_get_422_naming_the_field(make_app, fake, payload, field):
    app = make_app(fake, max_samples_per_request=4, max_steps=50)
    async with serve(app) as client:
        r = await client.post("/generate", json=payload)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["error"] == "invalid" and out["message"].startswith(f"{field}:")
    assert out["details"][0]["field"] == field
    assert fake.calls == []


async def test_malformed_json_and_unknown_user(make_app, fake):
    async with serve(make_app(fake)) as client:
        bad = await client.post("/generate", content=b"{nope", headers={"content-type": "application/json"})
        unknown = await client.post("/generate", json={"user_id": "mallory"})
        missing = await client.get("/nowhere")
    assert bad.status_code == 422 and bad.json()["message"].startswith("body: not valid JSON")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_user"
    assert "mallory" not in unknown.text  # user IDs are not echoed into messages (or logs)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_body_too_large_gets_413_by_length_or_while_streaming(make_app, fake):
    async with serve(make_app(fake, max_body_bytes=1024)) as client:
        r = await client.post("/generate", json={"user_id": "alice", "pad": "x" * 2000})

        async def chunks():
            for _ in range(4):
                yield b"x" * 400

        streamed = await client.post("/generate", content=chunks(),
                                     headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert streamed.status_code == 413


async def test_api_key_is_required_when_configured(make_app, fake):
    async with serve(make_app(fake, api_key="s3cret")) as client:
        ok = {"user_id": "alice", "seed": 1}
        assert (await client.post("/generate", json=ok)).status_code == 401
        wrong = await client.post("/generate", json=ok, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
        assert wrong.headers["www-authenticate"] == "Bearer"
        # auth comes before validation: an unauthenticated client learns nothing about the schema
        assert (await client.post("/generate", json={"bad": 1})).status_code == 401
        assert (await client.post("/generate", json=ok, headers={"X-API-Key": "s3cret"})).status_code == 200
        bearer = await client.post("/generate", json=ok, headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        assert (await client.get("/users")).status_code == 401
        assert (await client.get("/info", headers={"X-API-Key": "s3cret"})).status_code == 200
        for open_route in ("/healthz", "/readyz", "/metrics"):  # probes and scrapers need no key
            assert (await client.get(open_route)).status_code == 200


async def test_not_ready_until_warmed_up(make_app):
    fake = FakeStepper()
    fake.gate.clear()  # the warm-up steps block
    app = make_app(fake)
    async with serve(app, wait_ready=False) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "loading"}
        r = await client.post("/generate", json={"user_id": "alice"})
        assert r.status_code == 503 and r.json()["error"] == "not_ready" and "retry-after" in r.headers
        fake.gate.set()
        await app.state.service.wait_ready(10)
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post("/generate", json={"user_id": "alice"})).status_code == 200


async def test_a_pipeline_that_fails_to_load_reports_it(tmp_path):
    app = create_app(Settings(pipeline=tmp_path / "missing", device="cpu"))
    async with serve(app, wait_ready=False) as client:
        with pytest.raises(RuntimeError, match="failed to load"):
            await app.state.service.wait_ready(10)
        health = await client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert "no dopplergen.json" in app.state.service.failure and str(tmp_path) not in health.text
        assert (await client.get("/readyz")).json() == {"status": "failed"}
        assert (await client.post("/generate", json={"user_id": "alice"})).status_code == 503
        assert (await client.get("/users")).status_code == 503
